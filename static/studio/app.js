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

// === Issue 19 · page editor: drag to reorder, Alt+↑/↓ on the handle, keep the scroll ===
(() => {
  const list = document.querySelector("ol.page-editor[data-reorder-url]");
  const status = document.getElementById("reorder-status");
  const say = (text) => { if (status) status.textContent = text; };
  const rows = () => Array.from(list.querySelectorAll("li[data-page-id]"));
  const csrf = () => {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  };

  // After a reorder, the rows say their new numbers and the ends' buttons are disabled.
  const renumber = () => {
    rows().forEach((row, index) => {
      const number = index + 1;
      const shown = row.querySelector("[data-page-number]");
      if (shown) shown.textContent = String(number);
      const handle = row.querySelector("[data-drag-handle]");
      if (handle) handle.setAttribute("aria-label", `Move page ${number}`);
      row.querySelectorAll("[data-move]").forEach((button) => {
        const direction = button.dataset.move;
        button.setAttribute("aria-label", `Move page ${number} ${direction}`);
        button.disabled = direction === "up" ? index === 0 : index === rows().length - 1;
      });
    });
  };

  // Send the whole order; on refusal, put the rows back and say why.
  const save = (before, moved) => {
    const order = rows().map((row) => row.dataset.pageId);
    renumber();
    const body = new URLSearchParams({ order: order.join(",") });
    return fetch(list.dataset.reorderUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrf(), "Content-Type": "application/x-www-form-urlencoded" },
      body,
      credentials: "same-origin",
    }).then(async (response) => {
      if (!response.ok) throw new Error(await response.text());
      const position = rows().indexOf(moved) + 1;
      say(`Page moved to position ${position} of ${order.length}.`);
      list.dataset.saved = String(Date.now());
    }).catch((error) => {
      before.forEach((row) => list.appendChild(row));
      renumber();
      say(`Not moved: ${error.message || "the studio could not be reached."}`);
    });
  };

  if (list) {
    let dragged = null;
    let before = [];
    // Only the handle drags (the row's text stays selectable); the row is what moves.
    list.addEventListener("dragstart", (event) => {
      const handle = event.target.closest && event.target.closest("[data-drag-handle]");
      const row = handle && handle.closest("li[data-page-id]");
      if (!row) return;
      dragged = row;
      before = rows();
      row.classList.add("is-dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", row.dataset.pageId);
      event.dataTransfer.setDragImage(row, 16, 16);
    });
    list.addEventListener("dragover", (event) => {
      if (!dragged) return;
      const target = event.target.closest("li[data-page-id]");
      if (!target || target === dragged) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      list.querySelectorAll(".is-drop-target").forEach((row) => row.classList.remove("is-drop-target"));
      target.classList.add("is-drop-target");
    });
    list.addEventListener("drop", (event) => {
      if (!dragged) return;
      const target = event.target.closest("li[data-page-id]");
      event.preventDefault();
      if (!target || target === dragged) return;
      // Dropped on a row: take its place (after it when moving down, before it when up).
      const all = rows();
      const movingDown = all.indexOf(dragged) < all.indexOf(target);
      target.insertAdjacentElement(movingDown ? "afterend" : "beforebegin", dragged);
      save(before, dragged);
    });
    list.addEventListener("dragend", () => {
      list.querySelectorAll(".is-drop-target, .is-dragging").forEach((row) => {
        row.classList.remove("is-drop-target", "is-dragging");
      });
      dragged = null;
    });

    // The keyboard alternative: Alt+ArrowUp / Alt+ArrowDown on a focused handle.
    list.addEventListener("keydown", (event) => {
      const handle = event.target.closest("[data-drag-handle]");
      if (!handle || !event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
      event.preventDefault();
      const row = handle.closest("li[data-page-id]");
      const previous = rows();
      if (event.key === "ArrowUp") {
        const above = row.previousElementSibling;
        if (!above) return;
        above.insertAdjacentElement("beforebegin", row);
      } else {
        const below = row.nextElementSibling;
        if (!below) return;
        below.insertAdjacentElement("afterend", row);
      }
      handle.focus();
      save(previous, row);
    });
  }

  // Forms marked data-keep-scroll (the ↑/↓ buttons) reload the page where it was.
  const key = `studio-scroll:${window.location.pathname}`;
  document.body.addEventListener("submit", (event) => {
    if (event.target.matches("form[data-keep-scroll]")) {
      sessionStorage.setItem(key, String(window.scrollY));
    }
  });
  const restore = () => {
    const saved = sessionStorage.getItem(key);
    if (saved === null) return;
    sessionStorage.removeItem(key);
    window.scrollTo(0, Number(saved));
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", restore);
  else restore();

  // The manuscript preview scrolls into view when it is shown.
  const preview = document.querySelector("[data-scroll-into-view]");
  if (preview) preview.scrollIntoView({ block: "start" });
})();
// === end issue 19 · page editor ===========================================================
