# syncstore: the server and its CLI, as compiled JavaScript (dist/, built in the first stage).
#   docker build -t syncstore .
#   docker run -p 3003:3003 -e DATABASE_URL=postgres://... syncstore
# Without DATABASE_URL it uses the embedded database in /app/.syncstore/data (mount a volume there).
# Sync definitions: mount yours at /app/integrations (SYNCSTORE_INTEGRATIONS_DIR) and serve deploys them
# at start, or deploy them into the database with `syncstore deploy` (then no mount is needed).
# Node 24: the current LTS line (Node 20 reached its end of life in April 2026).
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No scripts yet: `prepare` compiles src/, which is not here yet.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY scripts ./scripts
COPY src ./src
RUN npm run build

FROM node:24-bookworm-slim

ENV NODE_ENV=production
WORKDIR /app

# Dependencies first, so editing the sources does not reinstall them. tsx stays a runtime
# dependency: it loads the team's TypeScript sync files when they are deployed.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json openapi.yaml ./
COPY bin ./bin
COPY src ./src
# Stamped with a hash of src/ (bin/source-stamp.js), the same sources as here.
COPY --from=build /app/dist ./dist
COPY migrations ./migrations
# The bundled example integration (used with the embedded database when no integrations folder is set).
COPY examples ./examples

# The only place the server writes (embedded database and its lock); tsx caches in /tmp.
RUN mkdir -p /app/.syncstore && chown node:node /app/.syncstore

ENV HOST=0.0.0.0 PORT=3003
USER node
EXPOSE 3003

# GET /health answers 200 while the process serves HTTP (GET /ready also checks the database).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3003) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# exec form: node is PID 1 and receives SIGTERM itself, for the graceful shutdown.
CMD ["node", "bin/syncstore.js", "serve"]
