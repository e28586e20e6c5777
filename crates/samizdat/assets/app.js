// Samizdat app: live updates and keyboard sending on top of server-rendered pages.
// Rules: text from events is only ever set with textContent; HTML comes only from our own
// server fragments (escaped there). No string shown to people lives here: the pages carry
// them (resource files), the script only shows or hides them.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const body = document.body;
  const chat = document.querySelector("section.chat");
  const conversation = chat ? chat.dataset.conversation : null;
  const list = document.getElementById("message-list");
  const scroller = document.getElementById("scroller");

  // ---- times in the reader's zone and language --------------------------------------------
  const lang = body.dataset.lang || undefined;
  const full = new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "short" });
  const clock = new Intl.DateTimeFormat(lang, { timeStyle: "short" });
  function localTimes(root) {
    const today = new Date().toDateString();
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      t.textContent = (d.toDateString() === today ? clock : full).format(d);
      t.title = full.format(d);
    });
  }
  localTimes(document);

  // ---- fragments --------------------------------------------------------------------------
  async function fragment(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "x-fragment": "1" } });
    if (!r.ok) throw new Error("HTTP " + r.status);
    return { html: await r.text(), headers: r.headers };
  }
  function nodes(html) {
    const t = document.createElement("template");
    t.innerHTML = html; // our server's escaped HTML only
    localTimes(t.content);
    return t.content;
  }

  function nearBottom() {
    return !scroller || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }
  function toBottom() {
    if (scroller) scroller.scrollTop = scroller.scrollHeight;
  }

  // The newest message on screen that has its place in the log (the relay ordered it);
  // messages still waiting come after it and are fetched again with anything new.
  function lastId() {
    const items = list ? list.querySelectorAll("li.msg[data-seq]") : [];
    return items.length ? items[items.length - 1].dataset.id : null;
  }

  // One fetch at a time; an event that arrives during a fetch asks for one more after it
  // (the running fetch may have read the log before that message was stored).
  let fetching = null;
  let again = false;
  async function fetchNewer() {
    if (!list || !conversation) return;
    if (fetching) {
      again = true;
      return fetching;
    }
    fetching = (async () => {
      const stick = nearBottom();
      const after = lastId();
      const url = "/c/" + conversation + "/messages" + (after ? "?after=" + encodeURIComponent(after) : "");
      const { html } = await fragment(url);
      const frag = nodes(html);
      // Everything after the anchor comes back in log order: replace what is shown.
      frag.querySelectorAll("li.msg").forEach((li) => {
        const old = document.getElementById(li.id);
        if (old) old.remove();
        list.appendChild(li);
      });
      if (stick) toBottom();
    })().finally(() => {
      fetching = null;
      if (again) {
        again = false;
        fetchNewer().catch(() => {});
      }
    });
    return fetching;
  }

  // Several events about one message can come at once (the relay's acknowledgement and a
  // receipt, say): only the newest request's answer is shown, in place of whatever element
  // shows the message by then (an older answer arriving late must not win).
  const refreshing = new Map();
  async function refreshMessage(id) {
    if (!list || !conversation) return;
    if (!document.getElementById("m-" + id)) {
      // Not shown yet (the fetch that brings it may be under way, with what the message was
      // when it started): once it is there, ask for it again as it is now.
      await fetchNewer();
      if (!document.getElementById("m-" + id)) return;
    }
    const n = (refreshing.get(id) || 0) + 1;
    refreshing.set(id, n);
    const { html } = await fragment("/c/" + conversation + "/m/" + encodeURIComponent(id));
    if (refreshing.get(id) !== n) return;
    refreshing.delete(id);
    const li = nodes(html).querySelector("li.msg");
    const now = document.getElementById("m-" + id);
    if (li && now) now.replaceWith(li);
  }

  // Replies show what they answer as it is now: refresh those that quote `id`.
  function refreshQuotes(id) {
    if (!list) return;
    list.querySelectorAll("a.quote").forEach((q) => {
      if (q.getAttribute("href") === "#m-" + id) {
        const li = q.closest("li.msg");
        if (li) refreshMessage(li.dataset.id).catch(() => {});
      }
    });
  }

  // ---- unread count in the tab title (muted chats not counted) ---------------------------
  const baseTitle = document.title;
  function updateTitle() {
    const holder = document.getElementById("chat-list");
    if (!holder) return;
    const n = Number(holder.dataset.unreadTotal || 0);
    document.title = n > 0 ? "(" + n + ") " + baseTitle : baseTitle;
  }
  updateTitle();

  // ---- notifications while the app is open: what they show is the person's setting -------
  // (data-notify: off, private — only that something arrived —, sender, sender_text).
  function mutedChat(id) {
    const a = document.querySelector('#chat-list a[data-conversation="' + CSS.escape(id) + '"]');
    const li = a && a.closest("li");
    return !!(li && li.dataset.muted);
  }
  function notify(e) {
    const level = body.dataset.notify || "private";
    if (level === "off" || !("Notification" in window) || Notification.permission !== "granted") return;
    // Ours (from another of our devices: the core calls us "me"), or the chat on screen.
    if (e.from === "me" || (e.conversation_id === conversation && !document.hidden)) return;
    if (mutedChat(e.conversation_id)) return;
    const generic = body.dataset.notifyText || "";
    let title = "Samizdat";
    let text = generic;
    if (level === "sender" || level === "sender_text") title = e.from || title;
    if (level === "sender_text") text = e.text || generic;
    try {
      const n = new Notification(title, { body: text, tag: level === "private" ? "samizdat" : e.conversation_id });
      n.onclick = () => {
        window.focus();
        location.href = "/c/" + encodeURIComponent(e.conversation_id);
      };
    } catch (_) {}
  }
  const allow = document.getElementById("notify-allow");
  if (allow && "Notification" in window) {
    const holder = document.getElementById("notify-permission");
    const denied = document.getElementById("notify-denied");
    const show = () => {
      holder.hidden = Notification.permission === "granted";
      denied.hidden = Notification.permission !== "denied";
      allow.hidden = Notification.permission === "denied";
    };
    show();
    allow.addEventListener("click", async () => {
      try {
        await Notification.requestPermission();
      } catch (_) {}
      show();
    });
  }

  let listTimer = null;
  function refreshList() {
    const holder = document.getElementById("chat-list");
    if (!holder) return;
    clearTimeout(listTimer);
    listTimer = setTimeout(async () => {
      const url = "/fragments/chats" + (conversation ? "?current=" + encodeURIComponent(conversation) : "");
      try {
        const { html } = await fragment(url);
        const fresh = nodes(html).querySelector("#chat-list");
        if (fresh) holder.replaceWith(fresh);
        updateTitle();
      } catch (_) {}
    }, 150);
  }

  // ---- connection banner ------------------------------------------------------------------
  function relayState(state) {
    const down = document.getElementById("banner-down");
    const retrying = document.getElementById("banner-retrying");
    if (down) down.hidden = state !== "down";
    if (retrying) retrying.hidden = state !== "retrying";
  }


  // ---- calls: WebRTC in this page, signalling and TURN credentials from the service -------
  // Only relayed candidates are gathered (unless the person allowed direct calls), all of
  // them before the offer or answer leaves: it travels inside MLS in one message.
  const callBox = document.getElementById("call");
  const calls = (function () {
    if (!callBox || !window.RTCPeerConnection || !navigator.mediaDevices) return null;
    const S = callBox.dataset;
    const $ = (id) => document.getElementById(id);
    const nameEl = $("call-name");
    const statusEl = $("call-status");
    const timerEl = $("call-timer");
    const secureEl = $("call-secure");
    const errorEl = $("call-error");
    const remoteAudio = $("call-remote-audio");
    const remoteVideo = $("call-remote-video");
    const localVideo = $("call-local-video");
    const buttons = {
      accept: $("call-accept"),
      decline: $("call-decline"),
      mute: $("call-mute"),
      camera: $("call-camera"),
      hangup: $("call-hangup"),
    };
    let cur = null;
    let tick = null;
    const chosen = { mic: "", cam: "" };
    // The ring: made here with WebAudio (no sound file to fetch). An incoming call rings
    // 440+480 Hz, 2 s on and 4 s off (the North American ring, as Signal's default is a tone
    // pair); the caller hears a softer ringback. A browser that allows no sound before the
    // first click stays silent — the screen and a notification still show the call.
    let ringer = null;
    function ring(kind) {
      stopRing();
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      const ctx = new Ctx();
      const gain = ctx.createGain();
      gain.gain.value = 0;
      gain.connect(ctx.destination);
      const oscs = [440, 480].map((hz) => {
        const o = ctx.createOscillator();
        o.frequency.value = hz;
        o.connect(gain);
        o.start();
        return o;
      });
      const level = kind === "incoming" ? 0.12 : 0.04;
      const on = () => {
        const t = ctx.currentTime;
        gain.gain.setValueAtTime(level, t);
        gain.gain.setValueAtTime(0, t + 2);
      };
      if (ctx.state !== "running") ctx.resume().catch(() => {});
      on();
      ringer = { ctx, oscs, kind, timer: setInterval(on, 6000) };
    }
    function stopRing() {
      if (!ringer) return;
      clearInterval(ringer.timer);
      ringer.oscs.forEach((o) => o.stop());
      ringer.ctx.close().catch(() => {});
      ringer = null;
    }

    async function api(url, fields) {
      const data = new URLSearchParams(fields || {});
      const r = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf },
        body: data,
      });
      const j = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(j.error || "HTTP " + r.status);
      return j;
    }
    async function read(id) {
      const r = await fetch("/calls/" + encodeURIComponent(id), { credentials: "same-origin" });
      const j = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(j.error || "HTTP " + r.status);
      return j;
    }
    function controls(which) {
      for (const [k, b] of Object.entries(buttons)) b.hidden = !which.includes(k);
    }
    function status(text) {
      statusEl.textContent = text || "";
    }
    function fail(text) {
      errorEl.textContent = text;
      errorEl.hidden = false;
    }
    function open(name) {
      errorEl.hidden = true;
      secureEl.hidden = true;
      timerEl.textContent = "";
      nameEl.textContent = name || "";
      callBox.hidden = false;
    }
    function clock() {
      const s = Math.floor((Date.now() - cur.connectedAt) / 1000);
      const m = Math.floor(s / 60);
      const h = Math.floor(m / 60);
      const two = (n) => String(n).padStart(2, "0");
      timerEl.textContent = h > 0 ? h + ":" + two(m % 60) + ":" + two(s % 60) : m + ":" + two(s % 60);
    }
    function teardown(text) {
      stopRing();
      if (tick) clearInterval(tick);
      tick = null;
      if (cur) {
        clearTimeout(cur.giveUp);
        if (cur.pc) cur.pc.close();
        if (cur.peers)
          cur.peers.forEach((p) => {
            p.pc.close();
            p.audio.remove();
          });
        if (cur.local) cur.local.getTracks().forEach((t) => t.stop());
      }
      cur = null;
      peersEl.replaceChildren();
      peersEl.hidden = true;
      remoteAudio.srcObject = null;
      remoteVideo.srcObject = null;
      localVideo.srcObject = null;
      remoteVideo.hidden = true;
      localVideo.hidden = true;
      $("call-devices").hidden = true;
      // The device names are the browser's, not in the reader's language: gone with the
      // call (the choice is kept for the next one).
      chosen.mic = $("call-mic").value || chosen.mic;
      chosen.cam = $("call-cam").value || chosen.cam;
      $("call-mic").replaceChildren();
      $("call-cam").replaceChildren();
      controls([]);
      status(text || S.ended);
      setTimeout(() => {
        if (!cur) callBox.hidden = true;
      }, 2500);
    }
    async function media(video) {
      const mic = $("call-mic").value || chosen.mic;
      const cam = $("call-cam").value || chosen.cam;
      const constraints = {
        audio: mic ? { deviceId: { exact: mic } } : true,
        video: video ? (cam ? { deviceId: { exact: cam } } : { width: 640, height: 480 }) : false,
      };
      return navigator.mediaDevices.getUserMedia(constraints);
    }
    async function listDevices(video) {
      const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
      const fill = (select, kind, current) => {
        select.replaceChildren();
        devices
          .filter((d) => d.kind === kind)
          .forEach((d, i) => {
            const o = document.createElement("option");
            o.value = d.deviceId;
            o.textContent = d.label || kind + " " + (i + 1);
            if (d.deviceId === current) o.selected = true;
            select.appendChild(o);
          });
      };
      const a = cur.local.getAudioTracks()[0];
      const v = cur.local.getVideoTracks()[0];
      fill($("call-mic"), "audioinput", a && a.getSettings().deviceId);
      fill($("call-cam"), "videoinput", v && v.getSettings().deviceId);
      $("call-cam-label").hidden = !video;
      $("call-devices").hidden = false;
    }
    async function switchDevice(kind) {
      if (!cur || !(cur.pc || cur.peers)) return;
      const id = $(kind === "audio" ? "call-mic" : "call-cam").value;
      const s = await navigator.mediaDevices
        .getUserMedia(kind === "audio" ? { audio: { deviceId: { exact: id } } } : { video: { deviceId: { exact: id } } })
        .catch(() => null);
      if (!s) return;
      const track = kind === "audio" ? s.getAudioTracks()[0] : s.getVideoTracks()[0];
      const pcs = cur.peers ? [...cur.peers.values()].map((p) => p.pc) : [cur.pc];
      for (const pc of pcs) {
        const sender = pc.getSenders().find((x) => x.track && x.track.kind === kind);
        if (sender) await sender.replaceTrack(track);
      }
      const old = kind === "audio" ? cur.local.getAudioTracks()[0] : cur.local.getVideoTracks()[0];
      if (old) {
        cur.local.removeTrack(old);
        old.stop();
      }
      cur.local.addTrack(track);
      if (kind === "video") localVideo.srcObject = cur.local;
    }
    $("call-mic").addEventListener("change", () => switchDevice("audio"));
    $("call-cam").addEventListener("change", () => switchDevice("video"));
    // The first connection of a call is up: stop ringing, start the clock.
    function connectedNow() {
      stopRing();
      cur.connectedAt = Date.now();
      status(S.connected);
      secureEl.hidden = false;
      clock();
      tick = setInterval(clock, 1000);
    }
    function connection(ice) {
      return new RTCPeerConnection({
        iceServers: ice.ice_servers,
        iceTransportPolicy: ice.relay_only ? "relay" : "all",
        bundlePolicy: "max-bundle",
        rtcpMuxPolicy: "require",
      });
    }
    function peer(ice) {
      const pc = connection(ice);
      pc.ontrack = (ev) => {
        const stream = ev.streams[0] || new MediaStream([ev.track]);
        if (ev.track.kind === "video") {
          remoteVideo.srcObject = stream;
          remoteVideo.hidden = false;
        } else {
          remoteAudio.srcObject = stream;
        }
      };
      const log = (window.samizdatCallLog = []);
      const note = () => log.push([Date.now(), pc.connectionState, pc.iceConnectionState]);
      pc.oniceconnectionstatechange = note;
      // Once connected, anything that needs a new offer (video added, an ICE restart) sends
      // one through MLS; the other side answers (`renegotiated`).
      pc.onnegotiationneeded = () => {
        if (!cur || cur.pc !== pc || !cur.connectedAt) return;
        const c = cur;
        c.chain = (c.chain || Promise.resolve())
          .then(async () => {
            await pc.setLocalDescription(await pc.createOffer());
            await gathered(pc);
            await api("/calls/" + encodeURIComponent(c.id) + "/renegotiate", { sdp: pc.localDescription.sdp });
          })
          .catch((e) => fail(e.message));
      };
      pc.onconnectionstatechange = () => {
        note();
        if (!cur || cur.pc !== pc) return;
        if (pc.connectionState === "connected") {
          if (!cur.connectedAt) connectedNow();
          else status(S.connected);
          clearTimeout(cur.giveUp);
        } else if (pc.connectionState === "disconnected" || pc.connectionState === "failed") {
          // The network moved or broke: the caller restarts ICE (a new offer through MLS);
          // if nothing connects within 20 s, the call ends.
          status(S.connecting);
          if (cur.outgoing && pc.connectionState === "failed" && (cur.restarts || 0) < 2) {
            cur.restarts = (cur.restarts || 0) + 1;
            pc.restartIce();
          }
          if (!cur.giveUp) {
            const c = cur;
            c.giveUp = setTimeout(() => {
              c.giveUp = null;
              if (cur !== c || pc.connectionState === "connected") return;
              fail(S.failed);
              api("/calls/" + encodeURIComponent(c.id) + "/end").catch(() => {});
              teardown(S.failed);
            }, 20000);
          }
        }
      };
      return pc;
    }
    function gathered(pc) {
      return new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        const done = () => {
          if (pc.iceGatheringState === "complete") resolve();
        };
        pc.addEventListener("icegatheringstatechange", done);
        setTimeout(resolve, 5000);
      });
    }
    function local(stream, video) {
      cur.local = stream;
      stream.getTracks().forEach((t) => cur.pc.addTrack(t, stream));
      if (video) {
        localVideo.srcObject = stream;
        localVideo.hidden = false;
      }
    }
    // ---- group calls: a mesh of relayed connections, every frame sealed with SFrame in the
    // worker /static/sframe.js (keyed from the group's MLS exporter; docs/CALLS.md) ---------
    const peersEl = $("call-peers");
    let sframeWorker = null;
    window.samizdatSframe = {};
    function sframe() {
      if (!sframeWorker) {
        sframeWorker = new Worker("/static/sframe.js");
        sframeWorker.onmessage = (m) => {
          if (m.data && m.data.sframe) window.samizdatSframe = m.data.sframe;
        };
      }
      return sframeWorker;
    }
    const kidOf = (hex) => parseInt(hex.slice(0, 8), 16) >>> 0;
    function showPeers() {
      peersEl.replaceChildren();
      cur.peers.forEach((p) => {
        const li = document.createElement("li");
        li.textContent = p.name;
        li.className = p.pc.connectionState === "connected" ? "on" : "";
        peersEl.appendChild(li);
      });
      peersEl.hidden = cur.peers.size === 0;
      if (cur.joined && cur.peers.size === 0) status(S.waiting);
    }
    function groupPeer(leg) {
      const pc = connection(cur.ice);
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.className = "call-peer-audio";
      audio.dataset.peer = leg.peer;
      audio.dataset.name = leg.name;
      callBox.appendChild(audio);
      const p = { pc, audio, name: leg.name, peer: leg.peer };
      // Only this person's key id opens what comes over their connection. Chromium hooks a
      // receiver's transform only when it is set before negotiation (seen with 156: set in
      // `ontrack` on a transceiver made by addTrack, no frame ever reaches it).
      const opener = (receiver) => {
        if (!receiver.transform)
          receiver.transform = new RTCRtpScriptTransform(sframe(), {
            op: "decrypt",
            key: cur.key,
            kid: kidOf(leg.peer),
            peer: leg.peer,
          });
      };
      cur.local.getTracks().forEach((t) => {
        const sender = pc.addTrack(t, cur.local);
        sender.transform = new RTCRtpScriptTransform(sframe(), { op: "encrypt", key: cur.key, kid: cur.kid, peer: leg.peer });
      });
      pc.getReceivers().forEach(opener);
      pc.ontrack = (ev) => {
        opener(ev.receiver);
        audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      };
      pc.onconnectionstatechange = () => {
        if (!cur || !cur.peers || cur.peers.get(leg.peer) !== p) return;
        if (pc.connectionState === "connected" && !cur.connectedAt) connectedNow();
        showPeers();
      };
      cur.peers.set(leg.peer, p);
      showPeers();
      return p;
    }
    function groupKeys(v) {
      cur.key = v.call.sframe_key;
      cur.kid = kidOf(v.call.me);
      if (v.verify) $("call-verify").href = v.verify;
    }
    // Bring the connections in line with the call: answer those who offered to us, take the
    // answers to our offers, drop those who left. One at a time, in order.
    function reconcile() {
      if (!cur || !cur.group) return;
      const c = cur;
      c.chain = (c.chain || Promise.resolve())
        .then(async () => {
          if (cur !== c || !c.joined) return;
          const v = await read(c.id);
          for (const leg of v.call.legs || []) {
            if (cur !== c) return;
            const p = c.peers.get(leg.peer);
            if (!leg.present) {
              if (p) {
                p.pc.close();
                p.audio.remove();
                c.peers.delete(leg.peer);
              }
            } else if (leg.their_offer && !leg.my_answer && !p) {
              const q = groupPeer(leg);
              await q.pc.setRemoteDescription({ type: "offer", sdp: leg.their_offer });
              await q.pc.setLocalDescription(await q.pc.createAnswer());
              await gathered(q.pc);
              await api("/calls/" + encodeURIComponent(c.id) + "/answer", { to: leg.peer, sdp: q.pc.localDescription.sdp });
            } else if (p && leg.their_answer && p.pc.signalingState === "have-local-offer") {
              await p.pc.setRemoteDescription({ type: "answer", sdp: leg.their_answer });
            }
          }
          showPeers();
        })
        .catch((e) => fail(e.message));
    }
    async function startGroup(conversationId, name) {
      cur = { outgoing: true, video: false, group: true, peers: new Map() };
      open(name);
      status(S.calling);
      controls(["hangup"]);
      try {
        if (!window.RTCRtpScriptTransform) throw new Error(S.failed);
        cur.local = await media(false).catch(() => {
          throw new Error(S.noMedia);
        });
        const ice = await api("/c/" + encodeURIComponent(conversationId) + "/call", { video: "0" });
        cur.id = ice.call_id;
        cur.ice = ice;
        cur.tunnel = !!ice.tunnel;
        await api("/calls/" + encodeURIComponent(cur.id) + "/start");
        groupKeys(await read(cur.id));
        cur.joined = true;
        status(S.waiting);
        controls(["mute", "hangup"]);
        listDevices(false);
        reconcile();
      } catch (e) {
        const id = cur && cur.id;
        if (id) api("/calls/" + encodeURIComponent(id) + "/end").catch(() => {});
        fail(e.message);
        teardown(S.failed);
      }
    }
    async function joinGroup() {
      const c = cur;
      c.joined = true;
      stopRing();
      controls(["hangup"]);
      status(S.connecting);
      try {
        if (!window.RTCRtpScriptTransform) throw new Error(S.failed);
        const v = await read(c.id);
        groupKeys(v);
        c.local = await media(false).catch(() => {
          throw new Error(S.noMedia);
        });
        c.ice = await api("/calls/" + encodeURIComponent(c.id) + "/ice");
        c.tunnel = !!c.ice.tunnel;
        for (const leg of v.call.legs || []) {
          if (!leg.present) continue;
          const p = groupPeer(leg);
          await p.pc.setLocalDescription(await p.pc.createOffer());
        }
        await Promise.all([...c.peers.values()].map((p) => gathered(p.pc)));
        const offers = [...c.peers.values()].map((p) => ({ to: p.peer, sdp: p.pc.localDescription.sdp }));
        await api("/calls/" + encodeURIComponent(c.id) + "/join", { offers: JSON.stringify(offers) });
        controls(["mute", "hangup"]);
        listDevices(false);
        reconcile();
      } catch (err) {
        api("/calls/" + encodeURIComponent(c.id) + "/end").catch(() => {});
        fail(err.message);
        teardown(S.failed);
      }
    }
    async function start(conversationId, video, name) {
      if (cur) return;
      cur = { outgoing: true, video };
      open(name);
      status(S.calling);
      controls(["hangup"]);
      try {
        const stream = await media(video).catch(() => {
          throw new Error(S.noMedia);
        });
        const ice = await api("/c/" + encodeURIComponent(conversationId) + "/call", { video: video ? "1" : "0" });
        cur.id = ice.call_id;
        cur.tunnel = !!ice.tunnel;
        cur.pc = peer(ice);
        local(stream, video);
        await cur.pc.setLocalDescription(await cur.pc.createOffer());
        await gathered(cur.pc);
        await api("/calls/" + encodeURIComponent(cur.id) + "/start", { sdp: cur.pc.localDescription.sdp });
        if (cur && !cur.connectedAt) ring("ringback");
        const v = await read(cur.id);
        nameEl.textContent = v.name;
        if (v.verify) $("call-verify").href = v.verify;
        controls(["mute", "camera", "hangup"]);
        cameraState(video);
        listDevices(video);
      } catch (e) {
        const id = cur && cur.id;
        if (id) api("/calls/" + encodeURIComponent(id) + "/end").catch(() => {});
        fail(e.message);
        teardown(S.failed);
      }
    }
    async function incoming(e) {
      if (cur) return; // busy: the service answers "busy" to a second call by itself
      cur = { id: e.call_id, outgoing: false, video: !!e.video, group: !!e.group, peers: e.group ? new Map() : null };
      open(e.group ? e.conversation : e.from);
      status(e.group ? S.incomingGroup : e.video ? S.incomingVideo : S.incoming);
      controls(["accept", "decline"]);
      buttons.accept.focus();
      ring("incoming");
      if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
        try {
          new Notification(e.video ? S.incomingVideo : S.incoming, { tag: "samizdat-call" });
        } catch (_) {}
      }
    }
    async function accept() {
      if (!cur || cur.outgoing || cur.pc || cur.joined) return;
      if (cur.group) return joinGroup();
      stopRing();
      controls(["hangup"]);
      status(S.connecting);
      try {
        const v = await read(cur.id);
        if (v.verify) $("call-verify").href = v.verify;
        const stream = await media(cur.video).catch(() => {
          throw new Error(S.noMedia);
        });
        const ice = await api("/calls/" + encodeURIComponent(cur.id) + "/ice");
        cur.tunnel = !!ice.tunnel;
        cur.pc = peer(ice);
        local(stream, cur.video);
        await cur.pc.setRemoteDescription({ type: "offer", sdp: v.call.offer });
        await cur.pc.setLocalDescription(await cur.pc.createAnswer());
        await gathered(cur.pc);
        await api("/calls/" + encodeURIComponent(cur.id) + "/accept", { sdp: cur.pc.localDescription.sdp });
        controls(["mute", "camera", "hangup"]);
        cameraState(cur.video);
        listDevices(cur.video);
      } catch (err) {
        const id = cur && cur.id;
        if (id) api("/calls/" + encodeURIComponent(id) + "/end").catch(() => {});
        fail(err.message);
        teardown(S.failed);
      }
    }
    // The other side renegotiated (or answered ours): bring the connection in line.
    function renegotiated(id) {
      if (!cur || cur.id !== id || !cur.pc || cur.group) return;
      const c = cur;
      c.chain = (c.chain || Promise.resolve())
        .then(async () => {
          const v = await read(id);
          const r = v.call.renegotiation;
          const pc = c.pc;
          if (!r || cur !== c) return;
          if (!r.mine && !r.answer) {
            if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
            await pc.setRemoteDescription({ type: "offer", sdp: r.offer });
            await pc.setLocalDescription(await pc.createAnswer());
            await gathered(pc);
            await api("/calls/" + encodeURIComponent(id) + "/reanswer", { sdp: pc.localDescription.sdp });
          } else if (r.mine && r.answer && pc.signalingState === "have-local-offer") {
            await pc.setRemoteDescription({ type: "answer", sdp: r.answer });
          }
        })
        .catch((e) => fail(e.message));
    }
    async function answered(id) {
      if (!cur || cur.id !== id || !cur.pc) return;
      stopRing();
      status(S.connecting);
      try {
        const v = await read(id);
        await cur.pc.setRemoteDescription({ type: "answer", sdp: v.call.answer });
      } catch (err) {
        fail(err.message);
      }
    }
    buttons.accept.addEventListener("click", accept);
    buttons.decline.addEventListener("click", () => {
      if (!cur) return;
      const id = cur.id;
      api("/calls/" + encodeURIComponent(id) + "/decline").catch(() => {});
      teardown();
    });
    buttons.hangup.addEventListener("click", () => {
      if (!cur) return;
      const id = cur.id;
      if (id) api("/calls/" + encodeURIComponent(id) + "/end").catch(() => {});
      teardown();
    });
    buttons.mute.addEventListener("click", () => {
      if (!cur || !cur.local) return;
      const on = buttons.mute.getAttribute("aria-pressed") !== "true";
      cur.local.getAudioTracks().forEach((t) => (t.enabled = !on));
      buttons.mute.setAttribute("aria-pressed", String(on));
      buttons.mute.textContent = on ? S.unmute : S.mute;
    });
    // "Camera on" in a voice call adds video: the new track makes the connection renegotiate.
    function cameraState(on) {
      buttons.camera.setAttribute("aria-pressed", String(!on));
      buttons.camera.textContent = on ? S.cameraOff : S.cameraOn;
    }
    async function addVideo() {
      const s = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } }).catch(() => null);
      if (!s || !cur || !cur.pc) return fail(S.noMedia);
      const track = s.getVideoTracks()[0];
      cur.local.addTrack(track);
      cur.pc.addTrack(track, cur.local);
      localVideo.srcObject = cur.local;
      localVideo.hidden = false;
      cameraState(true);
    }
    buttons.camera.addEventListener("click", () => {
      if (!cur || !cur.local) return;
      if (!cur.group && cur.pc && cur.local.getVideoTracks().length === 0) return addVideo();
      const off = buttons.camera.getAttribute("aria-pressed") !== "true";
      cur.local.getVideoTracks().forEach((t) => (t.enabled = !off));
      buttons.camera.setAttribute("aria-pressed", String(off));
      buttons.camera.textContent = off ? S.cameraOn : S.cameraOff;
    });
    callBox.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && cur && !cur.outgoing && !cur.pc && !cur.joined) buttons.decline.click();
    });
    document.querySelectorAll(".call-start").forEach((b) => {
      b.hidden = false;
      b.addEventListener("click", () => {
        const title = document.querySelector(".chat-head h1");
        const name = title ? title.textContent.trim() : "";
        if (cur) return;
        if (b.dataset.group === "1") startGroup(b.dataset.conversation, name);
        else start(b.dataset.conversation, b.dataset.video === "1", name);
      });
    });
    // For tests and for people who want to look: the connection of the call on screen.
    window.samizdatCall = () =>
      cur
        ? {
            id: cur.id,
            pc: cur.pc || null,
            tunnel: !!cur.tunnel,
            ringing: ringer ? ringer.kind : null,
            group: !!cur.group,
            peers: cur.peers ? [...cur.peers.values()].map((p) => ({ name: p.name, peer: p.peer, pc: p.pc })) : [],
          }
        : null;
    return {
      event(e) {
        if (e.event === "call_incoming") incoming(e);
        else if (e.event === "call_answered") answered(e.call_id);
        else if (e.event === "call_changed" && cur && cur.id === e.call_id) {
          if (cur.group) reconcile();
          else renegotiated(e.call_id);
        }
        else if (e.event === "call_ended" && cur && cur.id === e.call_id) teardown();
      },
    };
  })();

  // ---- live events ------------------------------------------------------------------------
  if (csrf && body.dataset.page !== "onboard" && body.dataset.page !== "unlock" && body.dataset.page !== "linking") {
    let wasClosed = false;
    const es = new EventSource("/events");
    es.onopen = () => {
      const st = document.getElementById("banner-stopped");
      if (st) st.hidden = true;
      if (wasClosed) {
        wasClosed = false;
        fetchNewer().catch(() => {});
        refreshList();
      }
    };
    // The app's own process stopped (not the relay): say so, and come back by ourselves once
    // it runs again (a restarted app keeps its address and this browser's session, so the
    // reload asks only to unlock).
    const stopped = document.getElementById("banner-stopped");
    let probing = false;
    function probe() {
      if (probing) return;
      probing = true;
      fetch("/static/favicon.svg", { cache: "no-store", credentials: "same-origin" })
        .then(() => {
          probing = false;
          // Back (or it refused the event stream for good: a new session is needed).
          if ((stopped && !stopped.hidden) || es.readyState === EventSource.CLOSED) location.reload();
        })
        .catch(() => {
          probing = false;
          if (stopped) stopped.hidden = false;
          setTimeout(probe, 1000);
        });
    }
    es.onerror = () => {
      wasClosed = true;
      probe();
    };
    es.onmessage = (m) => {
      let e;
      try {
        e = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (e.event === "relay") {
        relayState(e.state);
        if (e.state === "up") fetchNewer().catch(() => {});
        return;
      }
      if (e.event === "lagged") {
        fetchNewer().catch(() => {});
        refreshList();
        return;
      }
      if (e.event === "message") notify(e);
      if (calls && e.event && e.event.startsWith("call_")) calls.event(e);
      const mine = conversation && e.conversation_id === conversation;
      if (mine && (e.event === "message" || e.event === "message_queued")) {
        fetchNewer().catch(() => {});
      } else if (mine && (e.event === "message_delivered" || e.event === "message_failed")) {
        refreshMessage(e.id).catch(() => {});
      } else if (
        mine &&
        ["member_added", "member_removed", "member_left", "timer_set", "removed", "notice", "group_named", "call_ended"].includes(e.event)
      ) {
        // A line about the conversation was added to its chat.
        fetchNewer().catch(() => {});
        if (e.event === "group_named") {
          const h = document.querySelector(".chat-head h1");
          if (h) h.lastChild.textContent = e.conversation;
        }
      } else if (mine && e.event === "receipt") {
        for (const id of e.ids || []) refreshMessage(id).catch(() => {});
      } else if (mine && e.event === "reaction") {
        refreshMessage(e.id).catch(() => {});
      } else if (mine && e.event === "message_edited") {
        refreshMessage(e.id).catch(() => {});
        refreshQuotes(e.id);
      } else if (mine && e.event === "message_deleted") {
        if (e.for_everyone) {
          refreshMessage(e.id).catch(() => {});
          refreshQuotes(e.id);
        } else {
          const gone = document.getElementById("m-" + e.id);
          if (gone) gone.remove();
        }
      }
      refreshList();
    };
  }

  // ---- voice messages: recorded here (Opus), sent like a file with their length ----------
  const voice = document.getElementById("voice");
  if (voice && conversation && window.MediaRecorder && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    voice.hidden = false;
    const start = document.getElementById("voice-start");
    const live = document.getElementById("voice-live");
    const timeEl = document.getElementById("voice-time");
    const err = document.getElementById("voice-error");
    const MAX_MS = 10 * 60 * 1000;
    let rec = null;
    let stream = null;
    let chunks = [];
    let began = 0;
    let tick = null;
    let cancelled = false;
    const fmt = (ms) => {
      const s = Math.ceil(ms / 1000);
      return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    };
    function release() {
      clearInterval(tick);
      tick = null;
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = null;
      live.hidden = true;
      start.hidden = false;
    }
    start.addEventListener("click", async () => {
      err.hidden = true;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (_) {
        err.textContent = voice.dataset.denied;
        err.hidden = false;
        return;
      }
      const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) =>
        MediaRecorder.isTypeSupported(t)
      );
      // Opus at 24 kbit/s: clear speech, a minute in under 200 KB.
      rec = new MediaRecorder(stream, type ? { mimeType: type, audioBitsPerSecond: 24000 } : { audioBitsPerSecond: 24000 });
      chunks = [];
      cancelled = false;
      rec.ondataavailable = (e) => {
        if (e.data && e.data.size) chunks.push(e.data);
      };
      rec.onstop = () => {
        const ms = Math.min(Date.now() - began, MAX_MS);
        release();
        if (cancelled || !chunks.length) return;
        const mime = rec.mimeType || "audio/webm";
        const blob = new Blob(chunks, { type: mime });
        const data = new FormData();
        data.append("csrf", csrf);
        data.append("voice_ms", String(ms));
        data.append("file", blob, mime.includes("ogg") ? "voice-message.ogg" : "voice-message.webm");
        voice.dataset.sent = String(blob.size);
        fetch(voice.dataset.action, { method: "POST", credentials: "same-origin", body: data })
          .then(() => fetchNewer())
          .catch(() => {
            err.textContent = voice.dataset.denied;
            err.hidden = false;
          });
      };
      began = Date.now();
      rec.start(1000);
      start.hidden = true;
      live.hidden = false;
      timeEl.textContent = "0:00";
      tick = setInterval(() => {
        const ms = Date.now() - began;
        timeEl.textContent = fmt(ms);
        if (ms >= MAX_MS && rec.state === "recording") rec.stop();
      }, 250);
      document.getElementById("voice-send").focus();
    });
    document.getElementById("voice-send").addEventListener("click", () => {
      if (rec && rec.state === "recording") rec.stop();
    });
    document.getElementById("voice-cancel").addEventListener("click", () => {
      cancelled = true;
      if (rec && rec.state === "recording") rec.stop();
      else release();
    });
  }

  // ---- linking this device: the page follows the wait until the other device adds it ----
  if (document.body.dataset.page === "linking" && !document.querySelector(".error")) {
    setTimeout(() => location.reload(), 1500);
  }

  // ---- composer: Enter sends, Shift+Enter is a new line; drafts are kept in the profile ---
  // Nothing typed is kept by the browser: its web stores are plaintext files in the browser's
  // own profile, beyond wipe and duress (security review 3, H3). The draft goes to the app
  // (into the encrypted profile) a moment after typing stops, and when the page is left.
  const composer = document.getElementById("composer");
  if (composer && conversation) {
    const text = composer.querySelector("textarea");
    const draftUrl = text.dataset.draft;
    let saved = text.value;
    let draftTimer = null;
    function saveDraft(leaving) {
      clearTimeout(draftTimer);
      draftTimer = null;
      if (!draftUrl || text.value === saved) return;
      const value = text.value;
      const data = new URLSearchParams();
      data.set("text", value);
      fetch(draftUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf },
        body: data,
        keepalive: !!leaving,
      })
        .then((r) => {
          if (r.ok) saved = value;
        })
        .catch(() => {});
    }
    text.addEventListener("input", () => {
      clearTimeout(draftTimer);
      draftTimer = setTimeout(() => saveDraft(false), 700);
    });
    window.addEventListener("pagehide", () => saveDraft(true));
    text.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        composer.requestSubmit();
      }
    });
    // Sends leave one after another, in the order they were typed (two requests in flight
    // could otherwise reach the service in either order). The box is cleared at once; a
    // send that fails puts its text back, so nothing typed is lost.
    let sending = Promise.resolve();
    function restore(value) {
      text.value = text.value ? value + "\n" + text.value : value;
      saveDraft(false);
    }
    // Replying: the message's menu fills the bar above the box (the link also works
    // without the script, as a page with the bar filled in).
    const replyBar = document.getElementById("reply-bar");
    const replyTo = document.getElementById("reply-to");
    function clearReply() {
      if (replyTo) replyTo.value = "";
      if (replyBar) replyBar.hidden = true;
    }
    document.addEventListener("click", (ev) => {
      const link = ev.target.closest && ev.target.closest("a.reply-link");
      if (link && replyBar && replyTo) {
        ev.preventDefault();
        const li = link.closest("li.msg");
        replyTo.value = link.dataset.reply;
        document.getElementById("reply-from").textContent = li.querySelector(".from").textContent;
        const t = li.querySelector(":scope > .text");
        document.getElementById("reply-text").textContent = t ? t.textContent.slice(0, 200) : "";
        replyBar.hidden = false;
        const menu = link.closest("details");
        if (menu) menu.open = false;
        text.focus();
        return;
      }
      const cancel = ev.target.closest && ev.target.closest("#reply-cancel");
      if (cancel) {
        ev.preventDefault();
        clearReply();
        text.focus();
      }
    });
    async function post(value, reply) {
      const data = new URLSearchParams();
      data.set("text", value);
      if (reply) data.set("reply_to", reply);
      let r;
      try {
        r = await fetch(composer.action, {
          method: "POST",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf },
          body: data,
        });
      } catch (_) {
        // The app itself is unreachable: keep the text for another try.
        restore(value);
        return;
      }
      if (r.ok) {
        await fetchNewer().catch(() => {});
        toBottom();
        return;
      }
      restore(value);
      const msg = await r.text();
      let err = composer.querySelector(".error");
      if (!err) {
        err = document.createElement("p");
        err.className = "error";
        err.setAttribute("role", "alert");
        composer.prepend(err);
      }
      err.textContent = msg;
    }
    composer.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = text.value;
      if (!value.trim()) return;
      text.value = "";
      const reply = replyTo ? replyTo.value : "";
      clearReply();
      // The send clears the draft in the profile.
      clearTimeout(draftTimer);
      saved = "";
      sending = sending.then(() => post(value, reply));
    });
    text.focus();
  }
  toBottom();

  // ---- a message's menu: Escape closes it; its forms go without leaving the page -------
  if (list) {
    list.addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape") return;
      const menu = ev.target.closest && ev.target.closest("details.msg-menu");
      if (menu && menu.open) {
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
    list.addEventListener("submit", async (ev) => {
      const form = ev.target;
      if (!form.closest("li.msg") || form.classList.contains("retry")) return;
      ev.preventDefault();
      const li = form.closest("li.msg");
      const r = await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf },
        body: new URLSearchParams(new FormData(form)),
      }).catch(() => null);
      if (!r || !r.ok) {
        form.submit();
        return;
      }
      if (form.action.endsWith("/delete") && !new FormData(form).get("for_everyone")) {
        li.remove();
      } else {
        refreshMessage(li.dataset.id).catch(() => {});
      }
    });
  }

  // ---- disappearing messages leave the screen when their time is up ---------------------
  if (list) {
    setInterval(() => {
      const now = Date.now();
      list.querySelectorAll("li.msg[data-expires]").forEach((li) => {
        if (Number(li.dataset.expires) <= now) li.remove();
      });
    }, 1000);
  }

  // ---- scroll-back: older pages load as the top comes into view (the button stays, for the
  // keyboard and for browsers without IntersectionObserver) ---------------------------------
  const older = document.getElementById("older");
  if (older && list && conversation) {
    let loading = false;
    async function loadOlder() {
      if (loading || !older.isConnected) return;
      const first = list.querySelector("li.msg");
      if (!first) return;
      loading = true;
      try {
        const height = scroller.scrollHeight;
        const { html, headers } = await fragment(
          "/c/" + conversation + "/messages?before=" + encodeURIComponent(first.dataset.id)
        );
        list.prepend(nodes(html));
        scroller.scrollTop += scroller.scrollHeight - height;
        if (!headers.get("x-older")) older.remove();
      } finally {
        loading = false;
      }
    }
    older.addEventListener("click", () => loadOlder().catch(() => {}));
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(
        (seen) => {
          if (seen.some((e) => e.isIntersecting)) loadOlder().catch(() => {});
        },
        { root: scroller }
      ).observe(older);
    }
  }

  // ---- copy buttons -----------------------------------------------------------------------
  document.querySelectorAll("button[data-copy]").forEach((b) => {
    b.addEventListener("click", async () => {
      const input = document.getElementById(b.dataset.copy);
      if (!input) return;
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (_) {
        document.execCommand && document.execCommand("copy");
      }
      b.textContent = b.dataset.done;
    });
  });

  // ---- passphrase strength ----------------------------------------------------------------
  const pass = document.getElementById("passphrase");
  const meter = document.getElementById("strength");
  if (pass && meter) {
    const show = () => {
      const v = pass.value;
      let classes = 0;
      [/[a-zа-яё]/, /[A-ZА-ЯЁ]/, /[0-9]/, /[^A-Za-zА-Яа-яЁё0-9]/].forEach((re) => {
        if (re.test(v)) classes++;
      });
      const words = v.trim().split(/\s+/).filter((w) => w.length >= 3).length;
      let level = "weak";
      if (v.length >= 16 || (words >= 4 && v.length >= 14) || (v.length >= 12 && classes >= 3)) level = "strong";
      else if (v.length >= 10 || (v.length >= 8 && classes >= 3)) level = "fair";
      meter.querySelectorAll("[data-strength]").forEach((s) => {
        s.hidden = !v || s.dataset.strength !== level;
      });
      meter.dataset.level = v ? level : "";
    };
    pass.addEventListener("input", show);
  }
})();
