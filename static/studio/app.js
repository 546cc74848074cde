// Behaviour for the studio's pages. No inline scripts: everything hangs off data attributes
// and htmx events. Text is set with textContent, never innerHTML.
(() => {
  const body = document.body;

  // Toasts arrive in the HX-Trigger header as {"toast": {"level", "message"}}.
  body.addEventListener("toast", (event) => {
    const toasts = document.getElementById("toasts");
    const toast = document.createElement("p");
    toast.className = `toast toast--${event.detail.level || "info"}`;
    toast.textContent = event.detail.message;
    toasts.appendChild(toast);
    setTimeout(() => toast.remove(), 6000);
  });

  // Connection indicator: "● Live" while polls succeed, "Reconnecting…" after a failed one.
  const connection = document.getElementById("connection");
  let failing = false;
  const showConnection = () => {
    if (!connection) return;
    const polling = document.querySelector("[data-poll]") !== null;
    if (failing) {
      connection.hidden = false;
      connection.dataset.state = "reconnecting";
      connection.textContent = "Reconnecting…";
    } else if (polling) {
      connection.hidden = false;
      connection.dataset.state = "live";
      connection.textContent = "● Live";
    } else {
      connection.hidden = true;
      connection.dataset.state = "idle";
      connection.textContent = "";
    }
  };
  const isPoll = (event) => event.detail.elt && event.detail.elt.hasAttribute("data-poll");
  // A successful poll swaps out its own element, so listen before the swap, while the
  // event still bubbles up to the body.
  body.addEventListener("htmx:beforeSwap", (event) => {
    if (isPoll(event) && event.detail.xhr.status < 400) failing = false;
  });
  const pollFailed = (event) => {
    if (!isPoll(event)) return;
    failing = true;
    showConnection();
  };
  body.addEventListener("htmx:sendError", pollFailed);
  body.addEventListener("htmx:responseError", pollFailed);
  body.addEventListener("htmx:timeout", pollFailed);
  body.addEventListener("htmx:afterSettle", showConnection);
  body.addEventListener("htmx:oobAfterSwap", showConnection);
  document.addEventListener("DOMContentLoaded", showConnection);

  // Side panel (prompt editor, history): its close buttons.
  body.addEventListener("click", (event) => {
    const close = event.target.closest("[data-close-panel]");
    if (!close) return;
    const panel = document.getElementById("panel");
    if (panel) panel.replaceChildren();
    else window.history.back();
  });
})();

// --- Issue 19: cards and header that never mislead; word when a run ends -------------------
// The review tab's title follows the header (each poll swaps it): a tab in the background
// says how the run ended ("✓ 24/24 · The Tale of Peter Rabbit").
(() => {
  const retitle = () => {
    const header = document.getElementById("live-header");
    if (header && header.dataset.title) document.title = header.dataset.title;
  };
  document.body.addEventListener("htmx:afterSettle", retitle);
  document.body.addEventListener("htmx:oobAfterSwap", retitle);
})();
