"use strict";
// One image at a time. Both answers given -> POST /api/answer: the server stores the answer and only then
// replies with the next image, so what the page shows as done is on disk. The page never learns which
// method drew an image: it knows an opaque key, the subject's wording and the action's exemplars.

const rater = new URLSearchParams(location.search).get("rater");
const token = new URLSearchParams(location.search).get("token");  // a per-rater link's (raters=): sent with every request
const $ = (id) => document.getElementById(id);
let current = null;  // the image on screen: {key, url, subject, exemplars}, or null when all are judged
let answers = {};    // this image's answers so far: {action: bool, subject: bool}
let shownAt = performance.now();
let busy = false;    // a request is in flight: input waits for its reply

async function call(path, body) {
  const options = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function fail(error, saving = true) {
  $("error").textContent = saving ? `Not saved: ${error.message}. Reload the page to continue.` : `${error.message}.`;
  $("error").hidden = false;
}

function show(state) {
  $("fill").style.width = `${state.total ? 100 * state.judged / state.total : 100}%`;
  $("count").textContent = `${state.judged} judged / ${state.total - state.judged} to judge`;
  document.querySelectorAll("button.undo").forEach((b) => { b.disabled = !state.can_undo; });
  current = state.image;
  answers = {};
  $("judge").hidden = !current;
  $("finished").hidden = Boolean(current);
  if (current) {
    $("image").dataset.key = current.key;
    $("image").src = current.url;
    $("subject").textContent = current.subject;
    $("exemplars").replaceChildren(...current.exemplars.map((url) => {
      const img = document.createElement("img");
      img.src = url;
      img.alt = "an example of the action";
      img.onload = () => img.classList.toggle("small", img.naturalWidth < 256);
      return img;
    }));
    shownAt = performance.now();
  }
  highlight();
}

function highlight() {
  $("q-action").classList.toggle("active", !("action" in answers));
  $("q-subject").classList.toggle("active", "action" in answers && !("subject" in answers));
  document.querySelectorAll(".question button").forEach((b) => {
    const given = answers[b.dataset.question];
    b.setAttribute("aria-pressed", String(given !== undefined && String(given) === b.dataset.yes));
  });
}

async function answer(question, yes) {
  if (busy || !current) return;
  answers[question] = yes;
  highlight();
  if (!("action" in answers && "subject" in answers)) return;
  busy = true;
  try {
    show(await call("/api/answer", {rater, token, key: current.key, action: answers.action, subject: answers.subject,
                                    seconds: (performance.now() - shownAt) / 1000}));
  } catch (error) { fail(error); } finally { busy = false; }
}

async function undoLast() {
  if (busy) return;
  if (current && Object.keys(answers).length) {  // first the half-answered image on screen
    answers = {};
    highlight();
    return;
  }
  busy = true;
  try { show(await call("/api/undo", {rater, token})); } catch (error) { fail(error); } finally { busy = false; }
}

$("image").onload = () => {
  $("image").classList.toggle("small", $("image").naturalWidth < 256);
  shownAt = performance.now();  // time taken counts from when the image is on screen
};
document.querySelectorAll(".question button").forEach((b) => {
  b.onclick = () => answer(b.dataset.question, b.dataset.yes === "true");
});
document.querySelectorAll("button.undo").forEach((b) => { b.onclick = undoLast; });
document.addEventListener("keydown", (event) => {
  if (!rater || event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key === "y" || key === "n") {
    answer("action" in answers ? "subject" : "action", key === "y");
  } else if (key === "u" || key === "backspace") {
    undoLast();
  } else {
    return;
  }
  event.preventDefault();
});

if (rater) {
  call(`/api/next?rater=${encodeURIComponent(rater)}` + (token ? `&token=${encodeURIComponent(token)}` : ""))
    .then(show, (error) => fail(error, false));
} else {
  $("who").hidden = false;
  $("who").onsubmit = (event) => {
    event.preventDefault();
    location.search = `?rater=${encodeURIComponent($("name").value.trim())}`;
  };
}
