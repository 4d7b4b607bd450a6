-- One name per thing: `connection_id` is the public text id (connections.connection_id); the
-- integer key that points at connections.id is `connection_pk` wherever it is stored. Indexes,
-- primary and foreign keys follow a renamed column; the constraints whose generated names spelled
-- the old column are renamed too, so `\d` agrees with the columns.

ALTER TABLE datasets RENAME COLUMN connection_id TO connection_pk;
ALTER TABLE records RENAME COLUMN connection_id TO connection_pk;
ALTER TABLE records_seen RENAME COLUMN connection_id TO connection_pk;
ALTER TABLE syncs RENAME COLUMN connection_id TO connection_pk;
ALTER TABLE schedules RENAME COLUMN connection_id TO connection_pk;
ALTER TABLE runs RENAME COLUMN connection_id TO connection_pk;

ALTER TABLE datasets RENAME CONSTRAINT datasets_connection_id_fkey TO datasets_connection_pk_fkey;
ALTER TABLE records RENAME CONSTRAINT records_connection_id_model_variant_fkey TO records_connection_pk_model_variant_fkey;
ALTER TABLE records_seen RENAME CONSTRAINT records_seen_connection_id_model_variant_fkey TO records_seen_connection_pk_model_variant_fkey;
ALTER TABLE syncs RENAME CONSTRAINT syncs_connection_id_fkey TO syncs_connection_pk_fkey;
ALTER TABLE syncs RENAME CONSTRAINT syncs_connection_id_name_variant_key TO syncs_connection_pk_name_variant_key;
