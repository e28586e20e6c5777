// SFrame (RFC 9605) for group calls, run as the app's RTCRtpScriptTransform worker
// (docs/CALLS.md). Cipher suite AES_128_GCM_SHA256_128 (0x0004); the AEAD and HKDF are the
// browser's own WebCrypto — this file only lays out the header, the key schedule's labels
// and the nonce, as RFC 9605 §4.3–4.4 says. The base key comes from the group's MLS
// exporter for the call; each sender's key id (KID) is derived from its fingerprint, and a
// receiver accepts only the KID of the person its connection belongs to. A frame that does
// not authenticate is dropped and counted, never played.
//
// Loaded as a plain script (tests check it against the RFC's test vectors) it only defines
// the functions; in a worker it also handles `rtctransform` events.
"use strict";

const SFRAME_SUITE = 0x0004;
const SFRAME_TAG_BITS = 128;

function sframeBytesBE(n, len) {
  const out = new Uint8Array(len);
  let x = BigInt(n);
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

// The fewest bytes that hold `n` (at least one).
function sframeMinLen(n) {
  let len = 1;
  let x = BigInt(n) >> 8n;
  while (x > 0n) {
    len++;
    x >>= 8n;
  }
  return len;
}

function sframeConcat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function sframeHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

// RFC 9605 §4.3: config byte X K(3) Y C(3), then the KID and CTR bytes when they do not fit.
function sframeHeader(kid, ctr) {
  const parts = [];
  let config = 0;
  if (kid < 8) config |= kid << 4;
  else {
    const n = sframeMinLen(kid);
    config |= 0x80 | ((n - 1) << 4);
    parts.push(sframeBytesBE(kid, n));
  }
  if (ctr < 8) config |= ctr;
  else {
    const n = sframeMinLen(ctr);
    config |= 0x08 | (n - 1);
    parts.push(sframeBytesBE(ctr, n));
  }
  return sframeConcat(new Uint8Array([config]), ...parts);
}

function sframeParse(data) {
  if (data.length < 1) throw new Error("empty frame");
  const config = data[0];
  let at = 1;
  const read = (n) => {
    if (at + n > data.length) throw new Error("short header");
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(data[at + i]);
    at += n;
    return Number(v);
  };
  const kid = config & 0x80 ? read(((config >> 4) & 7) + 1) : (config >> 4) & 7;
  const ctr = config & 0x08 ? read((config & 7) + 1) : config & 7;
  return { kid, ctr, headerLen: at };
}

// RFC 9605 §4.4.2: sframe_key and sframe_salt for one KID, by HKDF-SHA-256 from the base key.
async function sframeKeys(baseKey, kid) {
  const ikm = await crypto.subtle.importKey("raw", baseKey, "HKDF", false, ["deriveBits"]);
  const enc = new TextEncoder();
  const label = (what) =>
    sframeConcat(enc.encode("SFrame 1.0 Secret " + what + " "), sframeBytesBE(kid, 8), sframeBytesBE(SFRAME_SUITE, 2));
  const expand = (what, bits) =>
    crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: label(what) }, ikm, bits);
  const rawKey = new Uint8Array(await expand("key", 128));
  const salt = new Uint8Array(await expand("salt", 96));
  const key = await crypto.subtle.importKey("raw", rawKey, "AES-GCM", false, ["encrypt", "decrypt"]);
  return { key, salt, rawKey };
}

// RFC 9605 §4.4.3: nonce = salt XOR CTR (big-endian, the nonce's length).
function sframeNonce(salt, ctr) {
  const c = sframeBytesBE(ctr, salt.length);
  return salt.map((b, i) => b ^ c[i]);
}

async function sframeEncrypt(keys, kid, ctr, plaintext, metadata) {
  const header = sframeHeader(kid, ctr);
  const aad = sframeConcat(header, metadata || new Uint8Array(0));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: sframeNonce(keys.salt, ctr), additionalData: aad, tagLength: SFRAME_TAG_BITS },
    keys.key,
    plaintext,
  );
  return sframeConcat(header, new Uint8Array(sealed));
}

// Opens a frame of `kid` (any other KID is refused: one connection, one sender).
async function sframeDecrypt(keys, kid, data, metadata) {
  const h = sframeParse(data);
  if (h.kid !== kid) throw new Error("another sender's key id");
  const header = data.subarray(0, h.headerLen);
  const aad = sframeConcat(header, metadata || new Uint8Array(0));
  const opened = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: sframeNonce(keys.salt, h.ctr), additionalData: aad, tagLength: SFRAME_TAG_BITS },
    keys.key,
    data.subarray(h.headerLen),
  );
  return new Uint8Array(opened);
}

// A person's KID: the first four bytes of their fingerprint (hex).
function sframeKid(fingerprintHex) {
  return parseInt(fingerprintHex.slice(0, 8), 16) >>> 0;
}

if (typeof self !== "undefined" && typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) {
  // Counts per transform, reported to the page every second (what a test or a curious person
  // can look at: frames sealed, opened, and dropped because they did not authenticate).
  const counts = {};
  setInterval(() => self.postMessage({ sframe: counts }), 1000);
  self.onrtctransform = (event) => {
    const t = event.transformer;
    const o = t.options || {};
    const name = o.op + ":" + o.peer;
    const c = (counts[name] = { op: o.op, peer: o.peer, frames: 0, dropped: 0, empty: 0 });
    const ready = sframeKeys(sframeHex(o.key), o.kid);
    let ctr = 0;
    const stream = new TransformStream({
      async transform(frame, controller) {
        try {
          const keys = await ready;
          const data = new Uint8Array(frame.data);
          // Chromium hands the receiver a few empty frames of its own at the start: nothing
          // to open or to play; not counted as refused.
          if (o.op === "decrypt" && data.length === 0) {
            c.empty++;
            return;
          }
          const out =
            o.op === "encrypt" ? await sframeEncrypt(keys, o.kid, ctr++, data) : await sframeDecrypt(keys, o.kid, data);
          frame.data = out.buffer;
          c.frames++;
          controller.enqueue(frame);
        } catch (e) {
          c.dropped++;
          c.why = String((e && e.message) || e) + " (" + frame.data.byteLength + " bytes)";
        }
      },
    });
    t.readable.pipeThrough(stream).pipeTo(t.writable).catch(() => {});
  };
}
