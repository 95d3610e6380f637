// Streaming playback: POST /v1/audio/speech with stream_format=sse and response_format=pcm, and every
// `speech.audio.delta` (one per text chunk) scheduled on a Web Audio graph as soon as it arrives.

import { authHeaders, errorFrom, ApiError } from "./api.js";

const START_LEAD_S = 0.05; // scheduling margin for the first buffer
// Read no further ahead than this: a book-length text then holds minutes, not hours, of decoded
// audio, and the unread stream holds the server back (it synthesizes only a few chunks ahead).
const MAX_AHEAD_S = 120;

/** Split an SSE byte stream into the JSON of its `data:` events. */
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

export function pcm16ToFloat(bytes) {
  const samples = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i += 1) out[i] = samples[i] / 32768;
  return out;
}

export function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A WAV file (PCM16 mono) around the given PCM pieces. */
export function wavBlob(pieces, sampleRate) {
  const length = pieces.reduce((sum, p) => sum + p.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + length, true);
  text(8, "WAVEfmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true);
  header.setUint16(22, 1, true);
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, "data");
  header.setUint32(40, length, true);
  return new Blob([header, ...pieces], { type: "audio/wav" });
}

/**
 * Gap-free playback of PCM16 pieces on one AudioContext: each piece starts where the one before
 * ends (or just ahead of now, after a gap). `silence()` drops whatever is scheduled, at once.
 */
export class PcmQueue {
  constructor() {
    this.context = null;
    this.sources = [];
    this.timers = [];
    this.next = 0;
  }

  /** Create or wake the AudioContext (call it from a user gesture: autoplay rules). */
  async resume() {
    this.context ||= new AudioContext();
    await this.context.resume();
  }

  /** Schedule PCM16 `bytes` at `rate`; `onStart` runs when they begin to sound. Answers that time. */
  schedule(bytes, rate, onStart = null) {
    const samples = pcm16ToFloat(bytes);
    const buffer = this.context.createBuffer(1, Math.max(samples.length, 1), rate);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.next, this.context.currentTime + START_LEAD_S);
    source.start(at);
    this.sources.push(source);
    source.onended = () => { this.sources = this.sources.filter((s) => s !== source); };
    if (onStart) this.timers.push(setTimeout(onStart, (at - this.context.currentTime) * 1000));
    this.next = at + samples.length / rate;
    return at;
  }

  /** Seconds of audio scheduled and not yet heard. */
  ahead() {
    return this.context ? Math.max(0, this.next - this.context.currentTime) : 0;
  }

  silence() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // never started
      }
    }
    this.timers.forEach(clearTimeout);
    this.sources = [];
    this.timers = [];
    this.next = 0;
  }
}

/**
 * One playback at a time. Callbacks: onStart({requestId, seed, chunks, ignored}), onLoading({model, message})
 * when the server loads the model before the audio, onFirstAudio(ms), onChunk(index) when a chunk begins to
 * sound, onReceived(index), onEnd({usage}), onError(error).
 */
export class StreamPlayer {
  constructor(callbacks) {
    this.cb = callbacks;
    this.queue = new PcmQueue();
    this.controller = null;
    this.pieces = [];
    this.sampleRate = 24000;
  }

  get busy() {
    return this.controller !== null;
  }

  /** Resolves when the stream has been received whole (playback may go on after). */
  async play(body) {
    this.stop();
    await this.queue.resume();
    const { context } = this.queue;
    const controller = new AbortController();
    const mine = () => this.controller === controller; // a newer play() may have replaced this one
    this.controller = controller;
    this.pieces = [];
    const clicked = performance.now();
    let index = 0;
    let first = true;
    try {
      const response = await fetch("/v1/audio/speech", {
        method: "POST", signal: controller.signal,
        headers: { ...authHeaders(), "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, stream_format: "sse", response_format: "pcm" }),
      });
      if (!response.ok) throw await errorFrom(response);
      const header = (name) => response.headers.get(name);
      this.cb.onStart?.({ requestId: header("X-Request-Id"), seed: header("X-Chatterbox-Seed"),
        chunks: Number(header("X-Chatterbox-Chunks")) || 0, ignored: header("X-Chatterbox-Ignored-Fields") });
      let usage = null;
      for await (const event of sseEvents(response.body)) {
        if (!mine()) return; // stopped: events already buffered must not sound
        if (event.type === "speech.audio.info") this.sampleRate = event.sample_rate;
        else if (event.type === "speech.loading") this.cb.onLoading?.(event);
        else if (event.type === "speech.audio.delta") {
          const bytes = base64Bytes(event.audio);
          this.pieces.push(bytes);
          const chunk = index;
          const at = this.queue.schedule(bytes, this.sampleRate, () => this.cb.onChunk?.(chunk));
          if (first) {
            first = false;
            const ms = performance.now() - clicked + Math.max(0, at - context.currentTime) * 1000;
            this.cb.onFirstAudio?.(ms);
          }
          this.cb.onReceived?.(index);
          index += 1;
          while (this.queue.ahead() > MAX_AHEAD_S && mine()) {
            await new Promise((resolve) => { setTimeout(resolve, 1000); });
          }
        } else if (event.type === "speech.audio.done") usage = event.usage;
        else if (event.type === "error") throw new ApiError(500, event.error?.message || "synthesis failed");
      }
      if (!usage) throw new ApiError(0, "The stream ended before the audio was complete.");
      if (!mine()) return;
      this.controller = null;
      this.cb.onEnd?.({ usage, endsIn: this.queue.ahead() });
    } catch (error) {
      if (error.name === "AbortError" || !mine()) return;
      this.controller = null;
      this.queue.silence();
      this.cb.onError?.(error);
    }
  }

  /** Cancel the request (the server stops synthesizing when the connection closes) and the sound. */
  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.queue.silence();
  }

  /** What was received so far, as a WAV file. */
  wav() {
    return wavBlob(this.pieces, this.sampleRate);
  }
}
