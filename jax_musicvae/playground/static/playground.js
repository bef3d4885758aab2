// The playground page: calls the JSON API, draws piano rolls, plays melodies with Web Audio.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, current: null, start: null, end: null, editRequest: 0 };

// ------------------------------------------------------------------ API calls

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function api(path, body, options = {}) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: options.raw ? {} : { "Content-Type": "application/json" },
    body: options.raw ? body : JSON.stringify(body),
  };
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return options.blob ? response.blob() : response.json();
}

async function guarded(action) {
  try {
    clearError();
    await action();
  } catch (error) {
    showError(error.message);
  }
}

// --------------------------------------------------------------- piano rolls

const STEP_PX = 5;
const ROLL_HEIGHT = 110;

function drawRoll(canvas, melody, playhead = null) {
  const spb = state.info ? state.info.steps_per_bar : 16;
  const width = Math.max(melody.steps * STEP_PX, 160);
  if (canvas.width !== width) canvas.width = width;
  canvas.height = ROLL_HEIGHT;
  const g = canvas.getContext("2d");
  g.fillStyle = "#f3f5f7";
  g.fillRect(0, 0, canvas.width, canvas.height);
  const pitches = melody.notes.map((n) => n[2]);
  let low = pitches.length ? Math.min(...pitches) : 60;
  let high = pitches.length ? Math.max(...pitches) : 72;
  const span = Math.max(high - low + 4, 24);
  low = Math.floor((low + high) / 2 - span / 2);
  high = low + span;
  const rowHeight = canvas.height / span;
  const beat = state.info ? state.info.steps_per_beat : 4;
  for (let step = 0; step <= melody.steps; step += beat) {
    g.fillStyle = step % spb === 0 ? "#9aa6b2" : "#dde3e8";
    g.fillRect(step * STEP_PX, 0, 1, canvas.height);
  }
  g.fillStyle = "#e8743b";
  for (const [onset, end, pitch] of melody.notes) {
    const y = canvas.height - (pitch - low + 1) * rowHeight;
    g.fillRect(onset * STEP_PX + 1, y, Math.max((end - onset) * STEP_PX - 2, 2), rowHeight);
  }
  if (!melody.notes.length) {
    g.fillStyle = "#5e6b78";
    g.fillText("silence", 8, 16);
  }
  if (playhead !== null) {
    g.fillStyle = "#1f6feb";
    g.fillRect(playhead * STEP_PX, 0, 2, canvas.height);
  }
}

// ------------------------------------------------------------------- playback

const player = { context: null, voices: [], card: null, frame: 0 };

function stopPlayback() {
  for (const voice of player.voices) {
    try { voice.stop(); } catch (e) { /* already stopped */ }
  }
  player.voices = [];
  cancelAnimationFrame(player.frame);
  if (player.card) {
    player.card.classList.remove("playing");
    player.card.querySelector(".play").textContent = "▶ play";
    drawRoll(player.card.querySelector("canvas"), player.card.melody);
  }
  player.card = null;
  document.body.dataset.playing = "false";
}

function play(card) {
  const wasPlaying = player.card === card;
  stopPlayback();
  if (wasPlaying) return;
  if (!player.context) player.context = new AudioContext();
  const context = player.context;
  context.resume();
  const melody = card.melody;
  const stepSeconds = 60 / state.info.tempo_bpm / 4;
  const t0 = context.currentTime + 0.05;
  for (const [onset, end, pitch] of melody.notes) {
    const start = t0 + onset * stepSeconds;
    const stop = t0 + end * stepSeconds;
    const osc = context.createOscillator();
    const gain = context.createGain();
    osc.type = "triangle";
    osc.frequency.value = 440 * Math.pow(2, (pitch - 69) / 12);
    gain.gain.setValueAtTime(0, start);
    gain.gain.linearRampToValueAtTime(0.25, start + 0.01);
    gain.gain.setTargetAtTime(0.12, start + 0.01, 0.1);
    gain.gain.setTargetAtTime(0, stop - 0.02, 0.015);
    osc.connect(gain).connect(context.destination);
    osc.start(start);
    osc.stop(stop + 0.1);
    player.voices.push(osc);
  }
  player.card = card;
  card.classList.add("playing");
  card.querySelector(".play").textContent = "■ stop";
  document.body.dataset.playing = "true";
  document.body.dataset.audio = context.state;
  const canvas = card.querySelector("canvas");
  const tick = () => {
    document.body.dataset.audio = context.state;
    const step = (context.currentTime - t0) / stepSeconds;
    if (step >= melody.steps) {
      stopPlayback();
      return;
    }
    drawRoll(canvas, melody, Math.max(step, 0));
    document.body.dataset.playhead = Math.max(step, 0).toFixed(2);
    player.frame = requestAnimationFrame(tick);
  };
  player.frame = requestAnimationFrame(tick);
}

// ---------------------------------------------------------------------- cards

async function download(melody) {
  await guarded(async () => {
    const blob = await api("/api/midi", { tokens: melody.tokens, name: melody.name },
      { blob: true });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${melody.name}.mid`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  });
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

function card(melody, title, extra = "") {
  const element = document.createElement("div");
  element.className = "card";
  element.melody = melody;
  element.dataset.danceability = melody.danceability;
  const heading = document.createElement("div");
  heading.className = "title";
  heading.textContent = title;
  const canvas = document.createElement("canvas");
  drawRoll(canvas, melody);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `measured danceability ${melody.danceability.toFixed(2)}` +
    ` · ${melody.notes.length} notes` + (extra ? ` · ${extra}` : "");
  const buttons = document.createElement("div");
  buttons.className = "buttons";
  buttons.append(
    button("▶ play", "play", () => play(element)),
    button("MIDI", "download", () => download(melody)),
    button("open", "open", () => setCurrent(melody)),
    button("start", "as-start", () => setEnd("start", melody)),
    button("end", "as-end", () => setEnd("end", melody)),
  );
  element.append(heading, canvas, meta, buttons);
  return element;
}

function replace(container, ...elements) {
  if (player.card && container.contains(player.card)) stopPlayback();
  container.replaceChildren(...elements);
}

function provenance(id, result) {
  const element = $(id);
  element.replaceChildren();
  if (result.seed === undefined) return;
  element.append(`seed ${result.seed}`);
  if (result.command) {
    const code = document.createElement("code");
    code.textContent = result.command;
    element.append(" · reproduce: ", code);
  }
}

// -------------------------------------------------------------------- actions

function setCurrent(melody, note = "") {
  state.current = melody;
  replace($("current"), card(melody, melody.name));
  const hint = document.createElement("p");
  hint.className = "empty";
  hint.textContent = "Move the slider to hear the melody with another danceability.";
  replace($("edited"), hint);
  $("edit-provenance").replaceChildren();
  $("melody-note").textContent = note || "";
  $("edit-dance").disabled = !state.info.editable;
  $("edit-dance").value = melody.danceability.toFixed(2);
  $("edit-dance-value").textContent = melody.danceability.toFixed(2);
  if (!state.start) setEnd("start", melody);
  else if (!state.end && state.start !== melody) setEnd("end", melody);
}

function setEnd(which, melody) {
  state[which] = melody;
  $(`${which}-name`).textContent = melody.name;
  $("interp-btn").disabled = !(state.start && state.end);
}

async function sample() {
  await guarded(async () => {
    const body = {
      count: Number($("count").value),
      temperature: Number($("temperature").value),
      seed: Number($("seed").value),
    };
    if ($("sample-dance-on").checked) body.danceability = Number($("sample-dance").value);
    const result = await api("/api/sample", body);
    provenance("sample-provenance", result);
    replace($("samples"), ...result.melodies.map((m, i) => card(m, `sample ${i}`)));
    if (!state.current) setCurrent(result.melodies[0]);
  });
}

let editTimer = 0;

function scheduleEdit() {
  $("edit-dance-value").textContent = Number($("edit-dance").value).toFixed(2);
  clearTimeout(editTimer);
  editTimer = setTimeout(edit, 120);
}

async function edit() {
  if (!state.current) return;
  const request = ++state.editRequest;
  await guarded(async () => {
    const requested = Number($("edit-dance").value);
    const result = await api("/api/edit", {
      tokens: state.current.tokens,
      danceability: requested,
      strength: Number($("edit-strength").value),
      name: state.current.name,
    });
    if (request !== state.editRequest) return; // a newer slider position is on its way
    const kept = Math.round(100 * result.kept);
    replace($("edited"), card(result.edited, `requested ${requested.toFixed(2)}`,
      `${kept}% of tokens kept`));
    provenance("edit-provenance", result);
  });
}

async function interpolate() {
  await guarded(async () => {
    const result = await api("/api/interpolate", {
      start: state.start.tokens,
      end: state.end.tokens,
      steps: Number($("steps").value),
    });
    provenance("interp-provenance", result);
    const last = result.melodies.length - 1;
    replace($("strip"), ...result.melodies.map((m, i) =>
      card(m, `step ${i}: t = ${(i / last).toFixed(2)}`)));
  });
}

async function upload(file) {
  await guarded(async () => {
    const result = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, file,
      { raw: true });
    setCurrent(result.melody, result.note);
  });
}

async function openHeldOut(index) {
  await guarded(async () => {
    const result = await api(`/api/held-out/${index}`);
    $("held-out-index").value = result.index;
    setCurrent(result.melody, `held-out window ${result.index} of ${result.windows} ` +
      `(${result.song})`);
  });
}

// ---------------------------------------------------------------------- start

async function start() {
  await guarded(async () => {
    const info = await api("/api/info");
    state.info = info;
    const m = info.model;
    $("model-info").textContent = `${m.name}: ${m.cell.toUpperCase()}, ${m.bars} bars of ` +
      `${m.representation}, latent ${m.latent_size}, conditioning ${m.conditioning} · ` +
      (info.controllable ? "takes danceability requests" : "no danceability control") +
      ` · ${info.checkpoint}`;
    $("sample-dance-on").disabled = !info.controllable;
    $("count").max = info.limits.samples;
    $("steps").max = info.limits.interpolation_steps;
    if (info.held_out) {
      $("held-out-controls").hidden = false;
      $("held-out-index").max = info.held_out.windows - 1;
    }
    document.body.dataset.ready = "true";
  });
}

$("sample-btn").addEventListener("click", sample);
$("new-seed").addEventListener("click", () => {
  $("seed").value = Math.floor(Math.random() * 1e6);
});
$("sample-dance-on").addEventListener("change", () => {
  $("sample-dance").disabled = !$("sample-dance-on").checked;
});
$("sample-dance").addEventListener("input", () => {
  $("sample-dance-value").textContent = Number($("sample-dance").value).toFixed(2);
});
$("edit-dance").addEventListener("input", scheduleEdit);
$("edit-strength").addEventListener("change", scheduleEdit);
$("interp-btn").addEventListener("click", interpolate);
$("upload").addEventListener("change", (e) => {
  if (e.target.files.length) upload(e.target.files[0]);
  e.target.value = "";
});
$("held-out-btn").addEventListener("click", () => openHeldOut(Number($("held-out-index").value)));
$("held-out-random").addEventListener("click", () =>
  openHeldOut(Math.floor(Math.random() * state.info.held_out.windows)));
start();
