// Sends the participant's choice (click or number key) once, then loads the next question from the server.
(function () {
  "use strict";

  function showError(message) {
    const error = document.getElementById("error");
    if (error) {
      error.textContent = message;
      error.hidden = false;
    }
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body || {}),
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
      throw new Error(typeof detail === "string" ? detail : "the server refused the answer");
    }
    return response.json();
  }

  const start = document.getElementById("start");
  if (start) {
    start.addEventListener("click", async function () {
      start.disabled = true;
      try {
        await post(start.dataset.url);
        window.location.replace(window.location.href);
      } catch (e) {
        start.disabled = false;
        showError("Could not start: " + e.message + ". Please try again.");
      }
    });
  }

  const trial = document.getElementById("trial");
  if (!trial) return;
  const buttons = Array.from(trial.querySelectorAll("button.choice"));
  let sent = false;

  async function choose(position) {
    if (sent) return;  // one answer per question, even on a double click
    sent = true;
    buttons.forEach(function (b) { b.disabled = true; });
    buttons[position].classList.add("chosen");
    try {
      await post(trial.dataset.url, {
        trial: Number(trial.dataset.trial), set_id: trial.dataset.set, choice: position,
      });
      window.location.replace(window.location.href);  // the server shows the next question
    } catch (e) {
      sent = false;
      buttons.forEach(function (b) { b.disabled = false; b.classList.remove("chosen"); });
      showError("Your answer was not saved (" + e.message + "). Please try again.");
    }
  }

  trial.querySelectorAll("img").forEach(function (img) {
    function mark() { img.classList.toggle("upscaled", img.naturalWidth < img.clientWidth); }
    if (img.complete) mark(); else img.addEventListener("load", mark);
  });

  buttons.forEach(function (button) {
    button.addEventListener("click", function () { choose(Number(button.dataset.choice)); });
  });
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || !/^[0-9]$/.test(event.key)) return;
    const position = (Number(event.key) + 9) % 10;  // keys 1-9 are positions 0-8, key 0 is position 9
    if (position < buttons.length) {
      event.preventDefault();
      choose(position);
    }
  });
})();
