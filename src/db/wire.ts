import { EventEmitter } from 'node:events'
import net from 'node:net'

import pg from 'pg'

import type { Row } from './rows.ts'

/** The protocol's DataRow message type, 'D' */
const DATA_ROW = 0x44
/** A message's type byte and its length (which counts itself but not the type) */
const HEADER = 5
/** A plain connection's read buffer: a page of 100 1 KB records is ~110 KB */
const READ_BUFFER_BYTES = 128 * 1024

/**
 * Where a connection's DataRow messages go while a statement reads them as bytes (`onRow` set),
 * instead of through pg's parser.
 */
export interface RowTap {
  onRow: ((message: Buffer, start: number, end: number) => void) | null
}

const TAPS = new WeakMap<object, RowTap>()

/** The tap of a connection made by WireClient; undefined for any other. */
export const tapOf = (connection: object): RowTap | undefined => TAPS.get(connection)

/**
 * A pg client whose connection can hand DataRow messages to a statement as bytes (RowTap).
 *
 * pg parses every message with pg-protocol, which decodes each DataRow value into a string; a page
 * of records then costs Node a string per payload, decoded from UTF-8 only to be encoded back into
 * the response body. Here the connection's socket data passes through a framer first: while a
 * statement has tapped the connection, its DataRow messages go to it as they arrived (a slice of
 * the socket's buffer), and every other message, on every connection at all times, reaches pg's
 * own parser unchanged and in order. pg sends a statement only after the previous one's
 * ReadyForQuery, so every DataRow while a tap is set belongs to the statement that set it.
 */
export class WireClient extends pg.Client {
  constructor(config?: pg.ClientConfig) {
    super(config)
    const connection = this.connection as unknown as Listening
    const tap: RowTap = { onRow: null }
    TAPS.set(connection, tap)
    // Without TLS, the socket reads into one buffer of its own, reused for every read: a page of
    // records arrives in a few reads, and Node would allocate a new buffer for each (outside V8's
    // heap, freed only by a collection). Whatever outlives a read is copied (Framer's `reused`).
    let framer: Framer | undefined
    let onreadSocket: net.Socket | undefined
    const { ssl } = (this as unknown as { connectionParameters: { ssl: unknown } }).connectionParameters
    if (!ssl && connection.stream instanceof net.Socket) {
      const onread: net.OnReadOpts = {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (n, buffer) => {
          framer!.push(Buffer.from(buffer.buffer, buffer.byteOffset, n))
          return true
        },
      }
      // @types/node 20 leaves `onread` out of the constructor's options; Node reads it there (v12.1).
      onreadSocket = new net.Socket({ onread } as net.SocketConstructorOpts)
      connection.stream = onreadSocket
    }
    const attach = connection.attachListeners
    // pg attaches its parser to the plain socket, or to the TLS stream once SSL is negotiated.
    connection.attachListeners = function (this: Listening, stream: NodeJS.ReadableStream) {
      const relay = new EventEmitter()
      attach.call(this, relay)
      const reused = onreadSocket !== undefined && stream === onreadSocket
      framer = new Framer(tap, (data) => relay.emit('data', data), reused)
      if (!reused) stream.on('data', (data: Buffer) => framer!.push(data))
      stream.on('end', () => relay.emit('end'))
    }
  }
}

/** The part of pg's Connection this file replaces (pg 8: lib/connection.js). */
interface Listening {
  stream: unknown
  attachListeners(stream: NodeJS.ReadableStream | EventEmitter): void
}

/** Splits socket data into messages: tapped DataRows to the tap, runs of the rest to `pass`. */
export class Framer {
  /** The start of a message whose end has not arrived, in the pieces it came in */
  private held: Buffer[] = []
  private heldBytes = 0
  /** The whole size of that message, once its header is in */
  private needed = 0

  /**
   * @param reused the data pushed is a buffer the next read overwrites: what is passed on or held
   *   past a push is copied first (tapped rows are read during the call only).
   */
  constructor(
    private readonly tap: RowTap,
    private readonly pass: (data: Buffer) => void,
    private readonly reused = false,
  ) {}

  push(data: Buffer): void {
    let at = this.heldBytes > 0 ? this.complete(data) : 0
    if (at < 0) return
    // The rest in place: messages end inside nearly every piece of a large result, and joining the
    // piece to the part held would copy all of it.
    let passFrom = at
    while (at + HEADER <= data.length) {
      const end = at + 1 + data.readUInt32BE(at + 1)
      if (end > data.length) break
      const onRow = data[at] === DATA_ROW ? this.tap.onRow : null
      if (onRow) {
        if (passFrom < at) this.passOn(data.subarray(passFrom, at))
        onRow(data, at + HEADER, end)
        passFrom = end
      }
      at = end
    }
    if (passFrom < at) this.passOn(data.subarray(passFrom, at))
    if (at < data.length) this.hold(data.subarray(at))
  }

  /**
   * Adds the start of `data` to the message held, and hands that message on once it is whole;
   * returns where the rest of `data` starts, or -1 when all of it went to the message.
   */
  private complete(data: Buffer): number {
    let at = 0
    if (this.heldBytes < HEADER) {
      at = Math.min(HEADER - this.heldBytes, data.length)
      this.hold(data.subarray(0, at))
      if (this.heldBytes < HEADER) return -1
    }
    const take = Math.min(this.needed - this.heldBytes, data.length - at)
    this.hold(data.subarray(at, at + take))
    at += take
    if (this.heldBytes < this.needed) return -1
    const message = Buffer.concat(this.held, this.heldBytes)
    this.held = []
    this.heldBytes = 0
    this.needed = 0
    const onRow = message[0] === DATA_ROW ? this.tap.onRow : null
    if (onRow) onRow(message, HEADER, message.length)
    else this.pass(message)
    return at
  }

  /** pg's parser may keep what it is given (a COPY chunk, say) */
  private passOn(data: Buffer): void {
    this.pass(this.reused ? Buffer.from(data) : data)
  }

  /** Keeps a piece of the message not yet whole (a copy, if its buffer is reused) */
  private hold(data: Buffer): void {
    const piece = this.reused ? Buffer.from(data) : data
    this.held.push(piece)
    this.heldBytes += piece.length
    if (this.heldBytes >= HEADER && this.needed === 0) {
      const header = this.held.length === 1 ? this.held[0]! : Buffer.concat(this.held)
      this.needed = 1 + header.readUInt32BE(1)
    }
  }
}

/** A DataRow message read in place: the Row of a statement that tapped its connection. */
export class WireRow implements Row {
  private message: Buffer = Buffer.alloc(0)
  private starts = new Int32Array(16)
  /** -1 for NULL */
  private lengths = new Int32Array(16)
  /** Columns in the row */
  width = 0

  /** Points this row at the DataRow whose body is message[start, end). */
  read(message: Buffer, start: number): void {
    const width = message.readInt16BE(start)
    if (width > this.starts.length) {
      this.starts = new Int32Array(width)
      this.lengths = new Int32Array(width)
    }
    let at = start + 2
    for (let i = 0; i < width; i++) {
      const length = message.readInt32BE(at)
      at += 4
      this.starts[i] = at
      this.lengths[i] = length
      if (length > 0) at += length
    }
    this.message = message
    this.width = width
  }

  text(column: number): string | null {
    const length = this.lengths[column]!
    if (length < 0) return null
    const start = this.starts[column]!
    return this.message.toString('utf8', start, start + length)
  }

  byteLength(column: number): number {
    return this.lengths[column]!
  }

  firstByte(column: number): number {
    return this.lengths[column]! > 0 ? this.message[this.starts[column]!]! : -1
  }

  copy(column: number, target: Buffer, at: number): number {
    const start = this.starts[column]!
    return this.message.copy(target, at, start, start + this.lengths[column]!)
  }
}
