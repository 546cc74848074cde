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

  // Connection indicator: "● Live" while work is on its way and polls succeed,
  // "Reconnecting…" after a failed poll (an idle book's tab polls too, without the badge).
  const connection = document.getElementById("connection");
  let failing = false;
  const showConnection = () => {
    if (!connection) return;
    const polling = document.querySelector("[data-poll]:not([data-poll-idle])") !== null;
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

  // A panel opened as a page of its own (no drawer to empty): its Close goes back. The
  // review page's drawer closes in the block below.
  body.addEventListener("click", (event) => {
    if (!event.target.closest("[data-close-panel]") || document.getElementById("panel")) return;
    window.history.back();
  });
})();

// The page editor: drag to reorder, Alt+↑/↓ on the handle, keep the scroll.
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
// The review page as a screen for pictures: filters, size slider, card menus, drawer; and
// the book preview's keys. The gallery has its own block below.
(() => {
  const body = document.body;
  const grid = () => document.getElementById("page-grid");
  const typing = (event) =>
    event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");

  // Filter chips: the server renders them with their counts and the cards with the keys of
  // the filters that show them (data-filters); here they switch without a reload, and their
  // counts follow every card the poll swaps in.
  const filterBar = document.querySelector("[data-filter-bar]");
  const matches = (card, key) => key === "all" || card.dataset.filters.split(" ").includes(key);
  const applyFilter = () => {
    const pages = grid();
    if (!pages || !filterBar) return;
    const show = pages.dataset.show || "all";
    const cards = pages.querySelectorAll(":scope > .card");
    cards.forEach((card) => { card.hidden = !matches(card, show); });
    // A section's heading shows while any of its cards does.
    let head = null;
    let shown = false;
    Array.from(pages.children).forEach((element) => {
      if (element.matches(".section-head")) {
        if (head) head.hidden = !shown;
        head = element;
        shown = false;
      } else if (element.matches(".card") && !element.hidden) {
        shown = true;
      }
    });
    if (head) head.hidden = !shown;
    // A big book's grid shows one window of cards: its counts come from the server.
    const windowed = filterBar.hasAttribute("data-windowed");
    filterBar.querySelectorAll("[data-filter]").forEach((chip) => {
      const key = chip.dataset.filter;
      if (!windowed) {
        const count = Array.from(cards).filter((card) => matches(card, key)).length;
        chip.querySelector(".filter-chip__count").textContent = String(count);
      }
      chip.classList.toggle("filter-chip--on", key === show);
      if (key === show) chip.setAttribute("aria-current", "true");
      else chip.removeAttribute("aria-current");
    });
  };
  if (filterBar) {
    filterBar.addEventListener("click", (event) => {
      const chip = event.target.closest("[data-filter]");
      if (!chip || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      grid().dataset.show = chip.dataset.filter;
      const url = new URL(window.location.href);
      if (chip.dataset.filter === "all") url.searchParams.delete("show");
      else url.searchParams.set("show", chip.dataset.filter);
      window.history.replaceState(null, "", url);
      applyFilter();
    });
    body.addEventListener("htmx:oobAfterSwap", applyFilter);
    body.addEventListener("htmx:afterSettle", applyFilter);
    applyFilter(); // the server hid the cards of ?show=; their empty sections go too
  }

  // Picture size: a slider over the grid's column width, remembered in this browser.
  const slider = document.querySelector("[data-size-slider]");
  const SIZE_KEY = "studio.cardSize";
  if (slider && grid()) {
    const input = slider.querySelector("input");
    const setSize = (value) => grid().style.setProperty("--card-size", `${value}px`);
    const saved = Number(window.localStorage.getItem(SIZE_KEY));
    if (saved >= Number(input.min) && saved <= Number(input.max)) input.value = String(saved);
    setSize(input.value);
    slider.hidden = false;
    input.addEventListener("input", () => {
      setSize(input.value);
      window.localStorage.setItem(SIZE_KEY, input.value);
    });
  }

  // Card menus (<details>): one open at a time; Esc or a click elsewhere closes them.
  const closeMenus = (except) => {
    document.querySelectorAll("details.card-menu[open]").forEach((menu) => {
      if (menu !== except) menu.open = false;
    });
  };
  body.addEventListener("click", (event) => {
    closeMenus(event.target.closest("details.card-menu"));
  });
  // A menu that would leave the window on the right opens towards the left instead.
  document.addEventListener(
    "toggle",
    (event) => {
      const menu = event.target;
      if (!menu.matches || !menu.matches("details.card-menu") || !menu.open) return;
      const items = menu.querySelector(".card-menu__items");
      items.classList.remove("card-menu__items--end");
      if (items.getBoundingClientRect().right > window.innerWidth - 8) {
        items.classList.add("card-menu__items--end");
      }
    },
    true,
  );
  // A menu's action, once sent, closes its menu (a drawer's link closes them all below).
  body.addEventListener("htmx:beforeRequest", (event) => {
    const menu = event.detail.elt.closest && event.detail.elt.closest("details.card-menu[open]");
    if (menu) menu.open = false;
  });
  // The poll swaps a changed card whole: an open menu stays open in the new card, laid out
  // as it was, and the focus stays on the summary or the item of the same name.
  let refocus = null;
  body.addEventListener("htmx:oobBeforeSwap", (event) => {
    const card = event.detail.target;
    if (!card.matches || !card.matches(".card")) return;
    const open = card.querySelector("details.card-menu[open]");
    const fresh = event.detail.fragment.querySelector("details.card-menu");
    if (open && fresh) {
      fresh.open = true;
      const end = open.querySelector(".card-menu__items--end");
      if (end) fresh.querySelector(".card-menu__items")?.classList.add("card-menu__items--end");
    }
    const focused = document.activeElement;
    if (focused && focused !== body && card.contains(focused)) {
      refocus = { card: card.id, tag: focused.tagName, text: focused.textContent.trim() };
    }
  });
  body.addEventListener("htmx:oobAfterSwap", () => {
    if (!refocus) return;
    const card = document.getElementById(refocus.card);
    const { tag, text } = refocus;
    refocus = null;
    if (!card || card.contains(document.activeElement)) return;
    const same = Array.from(card.querySelectorAll(tag)).find(
      (element) => element.textContent.trim() === text,
    );
    (same || card.querySelector("summary"))?.focus({ preventScroll: true });
  });
  body.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const open = event.target.closest && event.target.closest("details.card-menu[open]");
    if (open) {
      open.open = false;
      open.querySelector("summary").focus();
    }
  });

  // Panels (History, Edit prompt) open as a drawer beside the card that opened them; on
  // phones the stylesheet makes the drawer a bottom sheet.
  const panel = document.getElementById("panel");
  let drawerCard = null;
  let drawerOpener = null;
  const placeDrawer = () => {
    if (!panel || !panel.children.length) return;
    const card = drawerCard && document.getElementById(drawerCard);
    if (!card || window.matchMedia("(max-width: 720px)").matches) {
      panel.style.removeProperty("top");
      panel.style.removeProperty("left");
      // The sheet covers the bottom of the screen: keep the card's top in view above it.
      const covered = window.innerHeight - panel.offsetHeight;
      if (card && card.getBoundingClientRect().top > covered - 48) {
        window.scrollBy(0, card.getBoundingClientRect().top - 8);
      }
      return;
    }
    const area = panel.offsetParent.getBoundingClientRect();
    const box = card.getBoundingClientRect();
    const width = panel.offsetWidth;
    const gap = 12;
    let left = box.right + gap;
    if (left + width > window.innerWidth - gap) left = box.left - gap - width;
    if (left < gap) left = Math.max(gap, window.innerWidth - gap - width);
    // Level with the card, but wholly inside the window.
    let top = Math.max(box.top, gap);
    top = Math.min(top, window.innerHeight - gap - panel.offsetHeight);
    top = Math.max(top, gap);
    panel.style.setProperty("left", `${left - area.left}px`);
    panel.style.setProperty("top", `${top - area.top}px`);
  };
  if (panel) {
    body.addEventListener("htmx:beforeRequest", (event) => {
      const opener = event.detail.elt;
      if (!opener.hasAttribute || !opener.hasAttribute("data-drawer")) return;
      drawerOpener = opener;
      const card = opener.closest(".card");
      drawerCard = card ? card.id : null;
      closeMenus(null);
    });
    body.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target !== panel) return;
      if (!panel.children.length) {
        panel.replaceChildren(); // a saved prompt answers with the changed cards only
        return;
      }
      placeDrawer();
      const heading = panel.querySelector("h2");
      if (heading) {
        heading.tabIndex = -1;
        heading.focus({ preventScroll: true });
      }
    });
    window.addEventListener("resize", placeDrawer);
    const closeDrawer = () => {
      panel.replaceChildren();
      const card = drawerCard && document.getElementById(drawerCard);
      const again = card && card.querySelector("summary");
      (again || drawerOpener)?.focus();
    };
    body.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && panel.children.length && panel.contains(event.target)) {
        closeDrawer();
      }
    });
    // The panel's own Close button empties it; focus goes back to its card.
    panel.addEventListener("click", (event) => {
      if (event.target.closest("[data-close-panel]")) closeDrawer();
    });
  }

  // The book preview: ← and → turn the pages (the links work without script).
  if (document.querySelector("[data-book]")) {
    document.addEventListener("keydown", (event) => {
      if (typing(event) || event.altKey || event.ctrlKey || event.metaKey) return;
      const which = { ArrowLeft: "prev", ArrowRight: "next" }[event.key];
      const link = which && document.querySelector(`[data-book-turn="${which}"]`);
      if (link) {
        event.preventDefault();
        window.location.assign(link.href);
      }
    });
  }
})();
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
// The review header's poll (#live-header): every 2 s while work is on its way; on an idle
// book the pause grows to 10 s while nothing changes, and the tab asks at once when it is
// shown again or gets the focus, so a change made anywhere shows within 15 s. The header
// says which (data-poll-idle). A control's answer carries the header and the cards: while
// one is on its way its button says so ("Pausing…", disabled), and a poll's answer, which
// knows nothing of the click yet, is not swapped in.
(() => {
  const body = document.body;
  const FAST = 2000;
  const SLOW = 10000;
  const RETRY = 4000;
  let delay = FAST;
  let timer = null;
  let pending = 0; // controls sent and not answered yet
  const header = () => document.querySelector("#live-header[data-poll]");
  const ask = () => {
    const element = header();
    if (element) htmx.trigger(element, "studio-poll");
  };
  const schedule = (ms) => {
    clearTimeout(timer);
    timer = setTimeout(ask, ms);
  };
  // The element that sent the request (after a swap, htmx names its closest ancestor still
  // in the page as the event's elt).
  const origin = (event) => (event.detail.requestConfig || event.detail).elt;
  const isHeaderPoll = (event) => origin(event) && origin(event).id === "live-header";
  const isControl = (event) =>
    event.detail.requestConfig && event.detail.requestConfig.verb !== "get" && header();

  body.addEventListener("htmx:afterRequest", (event) => {
    if (isHeaderPoll(event)) {
      const element = header();
      const busy = element && !element.hasAttribute("data-poll-idle");
      const changed = event.detail.successful && event.detail.xhr.status !== 204;
      // A failed poll tries again sooner than a quiet one: "Reconnecting…" is on show, and
      // the tab must say "● Live" within seconds of the server's return.
      const most = event.detail.successful ? SLOW : RETRY;
      delay = busy || changed ? FAST : Math.min(most, Math.round(delay * 1.5));
      schedule(delay);
    } else if (isControl(event) && pending > 0) {
      pending -= 1;
      const button = origin(event).querySelector("button[data-busy-label]");
      if (button && button.dataset.label && !event.detail.successful) {
        button.textContent = button.dataset.label; // not done: the control as it was
      }
      delay = FAST;
      schedule(FAST);
    }
  });
  body.addEventListener("htmx:beforeSend", (event) => {
    if (!isControl(event)) return;
    pending += 1;
    const button = origin(event).querySelector("button[data-busy-label]");
    if (button) {
      button.dataset.label = button.textContent;
      button.textContent = button.dataset.busyLabel;
    }
  });
  body.addEventListener("htmx:beforeSwap", (event) => {
    if (isHeaderPoll(event) && pending > 0) event.detail.shouldSwap = false;
  });
  // A control's answer holds every card changed since this tab's cursor, not only its own.
  body.addEventListener("htmx:configRequest", (event) => {
    const element = header();
    if (event.detail.verb === "get" || !element) return;
    const url = new URL(element.getAttribute("hx-get"), window.location.href);
    const since = url.searchParams.get("since");
    if (since) event.detail.headers["X-Studio-Since"] = since;
  });
  const now = () => {
    delay = FAST;
    schedule(0);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) now();
  });
  window.addEventListener("focus", now);
  if (header()) schedule(FAST);
})();
// The gallery (/projects/<id>/gallery/<page id>/). On the review page a picture's link opens
// its page in the full-window dialog #gallery, which loads the gallery's fragment: its
// controls are the cards' own (htmx posts whose answer moves the cards behind), and the
// gallery reloads after each of them and whenever the poll swaps its page's card. On the
// gallery's own page (a shared link, or no script on the review page) the same keys work
// on its plain links and forms. Keys: ← → pages, 1–4 choose, A approve, R regenerate,
// E edit prompt, V try variants, K keep the picture the variants would replace, ? the
// keys, Esc closes (the keys, a panel, the gallery).
// Touch screens swipe between pages.
// History: opening the dialog adds one entry (the address bar shows the gallery's address,
// which opens the gallery's own page when reloaded or shared); walking pages and versions
// replaces it, so Back closes the gallery wherever the editor walked, and Forward opens it
// again at the page shown last. Esc and Close go back through that entry, which keeps the
// history as if Back had been pressed.
(() => {
  const root = document.querySelector("[data-gallery-root]");
  if (!root) return;
  const body = document.body;
  const dialog = root.tagName === "DIALOG" ? root : null;
  const content = root.querySelector("#gallery-body");
  const panel = root.querySelector("#gallery-panel");
  const help = root.querySelector("#gallery-help");
  const status = root.querySelector("#gallery-status");
  const toastLine = root.querySelector("[data-gallery-toast]");
  const view = () => content.querySelector("[data-gallery]");
  const isOpen = () => !dialog || dialog.open;
  const narrow = () => window.matchMedia("(max-width: 720px)").matches;
  const grid = () => document.getElementById("page-grid");
  const KEYS = {
    a: "Approve",
    r: "Regenerate",
    e: "Edit prompt",
    v: "Try variants",
    k: "Keep the current picture",
  };
  let opener = null;
  let helpOpener = null;
  let panelOpener = null;
  let ticket = 0; // the latest load: an earlier answer arriving late is dropped
  let toastTimer = null;

  const announce = (text) => {
    if (text && status.textContent !== text) status.textContent = text;
  };
  const tell = (text) => {
    if (!toastLine) return;
    toastLine.textContent = text;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastLine.textContent = ""; }, 6000);
  };

  // Each picture as large as fits: the columns (and rows) that give the largest square
  // pictures in the stage. On a phone the pictures fill the width instead (the stylesheet).
  const fit = () => {
    const tiles = content.querySelector("[data-gallery-tiles]");
    if (!tiles) return;
    if (narrow()) {
      ["--cols", "--rows", "--tile"].forEach((name) => tiles.style.removeProperty(name));
      return;
    }
    const count = tiles.children.length;
    const { width, height } = tiles.getBoundingClientRect();
    const gap = 12;
    const caption = 52; // its words and its button, under each picture
    let best = { cols: 1, size: -Infinity };
    for (let cols = 1; cols <= count; cols += 1) {
      const rows = Math.ceil(count / cols);
      const size = Math.min((width - gap * (cols - 1)) / cols, (height - gap * (rows - 1)) / rows - caption);
      if (size > best.size) best = { cols, size };
    }
    tiles.style.setProperty("--cols", String(best.cols));
    tiles.style.setProperty("--rows", String(Math.ceil(count / best.cols)));
    tiles.style.setProperty("--tile", `${Math.max(Math.floor(best.size), 64)}px`);
  };
  window.addEventListener("resize", fit);

  // What had the focus inside the gallery, to give it back after a reload.
  const focusedKey = () => {
    const focused = document.activeElement;
    if (!focused || !content.contains(focused)) return null;
    for (const name of ["galleryKey", "galleryStep"]) {
      if (focused.dataset[name]) {
        const attribute = name === "galleryKey" ? "data-gallery-key" : "data-gallery-step";
        return `[${attribute}="${focused.dataset[name]}"]`;
      }
    }
    return null;
  };
  const shown = (again) => {
    const gallery = view();
    if (!gallery) return;
    fit();
    const active = document.activeElement;
    if (!active || active === body || !root.contains(active) || active === root) {
      const same = again && gallery.querySelector(again);
      (same || gallery.querySelector("#gallery-title")).focus({ preventScroll: true });
    }
    announce(gallery.dataset.announce);
  };

  // Load a page's gallery into the dialog; on the gallery's own page, go there.
  const load = async (url) => {
    if (!dialog) {
      window.location.assign(url);
      return;
    }
    const mine = ++ticket;
    let response;
    try {
      response = await fetch(url, {
        headers: { "HX-Request": "true", "HX-Target": "gallery-body" },
        credentials: "same-origin",
      });
    } catch (error) {
      tell("The studio could not be reached; try again.");
      return;
    }
    if (mine !== ticket || !dialog.open) return;
    if (!response.ok) {
      tell((await response.text()) || `The gallery could not be shown (HTTP ${response.status}).`);
      return;
    }
    const html = await response.text();
    if (mine !== ticket || !dialog.open) return;
    const again = focusedKey();
    htmx.swap(content, html, { swapStyle: "innerHTML" });
    remember();
    shown(again);
  };
  const refresh = () => {
    const gallery = view();
    if (dialog && dialog.open && gallery) load(gallery.dataset.here);
  };
  const step = (which) => {
    const link = view() && view().querySelector(`[data-gallery-step="${which}"]`);
    if (link) {
      closePanel(false);
      load(link.href);
    } else {
      tell("No other page is shown with this filter.");
    }
  };

  const refused = (xhr) => {
    try {
      const toast = JSON.parse(xhr.getResponseHeader("HX-Trigger") || "{}").toast;
      return Boolean(toast && toast.level === "error");
    } catch (error) {
      return false;
    }
  };

  // The dialog's history entry: {gallery: its address}, kept to the page shown.
  const ours = (state) => Boolean(state && state.gallery);
  const remember = () => {
    const gallery = view();
    if (!gallery || !ours(window.history.state)) return;
    const here = new URL(gallery.dataset.here, window.location.href).toString();
    if (window.history.state.gallery !== here) window.history.replaceState({ gallery: here }, "", here);
  };
  const show = (url) => {
    content.replaceChildren();
    panel.replaceChildren();
    help.hidden = true;
    status.textContent = "";
    dialog.showModal();
    load(url);
  };
  const open = (link) => {
    opener = link;
    const url = new URL(link.href, window.location.href);
    const filter = grid() ? grid().dataset.show : "";
    if (filter && filter !== "all") url.searchParams.set("show", filter);
    else url.searchParams.delete("show");
    // An entry of its own (not one left by a Forward that is still there): Back closes it.
    if (ours(window.history.state)) window.history.replaceState({ gallery: url.toString() }, "", url);
    else window.history.pushState({ gallery: url.toString() }, "", url);
    show(url.toString());
  };
  const close = () => {
    if (!dialog) window.location.assign(view().querySelector("[data-gallery-close]").href);
    else if (ours(window.history.state)) window.history.back(); // popstate closes it
    else dialog.close();
  };
  if (dialog) {
    // Back closes the gallery; Forward opens it again where it was.
    window.addEventListener("popstate", (event) => {
      if (ours(event.state)) {
        if (!dialog.open) show(event.state.gallery);
        else load(event.state.gallery);
      } else if (dialog.open) {
        dialog.close();
      }
    });
    body.addEventListener("click", (event) => {
      const link = event.target.closest("a[data-gallery]");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      open(link);
    });
    // Focus goes back to the card of the page shown last (the opener, unless the editor
    // walked on), its picture's link or else its menu.
    dialog.addEventListener("close", () => {
      const gallery = view();
      const card = gallery && document.getElementById(gallery.dataset.card);
      const back = card && (card.querySelector("a[data-gallery]") || card.querySelector("summary"));
      ticket += 1;
      content.replaceChildren();
      panel.replaceChildren();
      (back || opener)?.focus();
      if (ours(window.history.state)) window.history.back(); // closed some other way
    });
    // Esc is handled below (the keys, then a panel, then the gallery): the dialog's own
    // cancel would close all at once.
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      escape();
    });
    // The gallery follows its page: a control's answer or the poll swapped its card.
    body.addEventListener("htmx:oobAfterSwap", (event) => {
      const gallery = view();
      if (gallery && dialog.open && event.detail.target && event.detail.target.id === gallery.dataset.card) {
        refresh();
      }
    });
    body.addEventListener("htmx:afterRequest", (event) => {
      const source = event.detail.elt;
      const config = event.detail.requestConfig;
      if (!dialog.open || !source || !root.contains(source) || !config || config.verb === "get") return;
      if (event.detail.xhr.status >= 300) return; // a form's errors stay on show
      // A panel's form done (Try variants) closes it; refused, it stays with the toast's why.
      if (panel.contains(source) && source.closest("form:not([hx-target])") && !refused(event.detail.xhr)) {
        closePanel(true);
      }
      refresh();
    });
    // Toasts are behind the dialog: the gallery says them too.
    body.addEventListener("toast", (event) => {
      if (dialog.open) tell(event.detail.message);
    });
  }

  // Panels (Edit prompt, Try variants) open beside the picture, inside the gallery.
  const openPanel = (link) => {
    if (!dialog) {
      window.location.assign(link.href);
      return;
    }
    panelOpener = link.dataset.galleryKey;
    htmx.ajax("GET", link.href, { target: panel, swap: "innerHTML" });
  };
  const backToPanelOpener = () => {
    const again = panelOpener && view() && view().querySelector(`[data-gallery-key="${panelOpener}"]`);
    (again || view()?.querySelector("#gallery-title"))?.focus();
  };
  const closePanel = (refocus) => {
    if (!panel || !panel.children.length) return false;
    panel.replaceChildren();
    if (refocus) backToPanelOpener();
    return true;
  };
  if (panel) {
    body.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target !== panel) return;
      if (!panel.querySelector(".panel")) {
        panel.replaceChildren(); // a saved prompt answers with the changed cards only
        backToPanelOpener();
        return;
      }
      const heading = panel.querySelector("h2");
      if (heading) {
        heading.tabIndex = -1;
        heading.focus({ preventScroll: true });
      }
    });
    panel.addEventListener("click", (event) => {
      if (event.target.closest("[data-close-panel]")) closePanel(true);
    });
  }

  const toggleHelp = () => {
    if (help.hidden) {
      helpOpener = document.activeElement;
      help.hidden = false;
      help.querySelector("h2").focus();
    } else {
      help.hidden = true;
      (root.contains(helpOpener) ? helpOpener : view()?.querySelector("#gallery-title"))?.focus();
    }
  };
  const escape = () => {
    if (!help.hidden) toggleHelp();
    else if (!closePanel(true)) close();
  };

  root.addEventListener("click", (event) => {
    const target = event.target;
    if (target.closest("[data-gallery-help]") || target.closest("[data-gallery-help-close]")) {
      toggleHelp();
      return;
    }
    if (!dialog || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const stepper = target.closest("[data-gallery-step]");
    const more = target.closest("[data-gallery-load]");
    const panelLink = target.closest("[data-gallery-panel]");
    if (stepper) {
      event.preventDefault();
      step(stepper.dataset.galleryStep);
    } else if (more) {
      event.preventDefault();
      load(more.href);
    } else if (panelLink) {
      event.preventDefault();
      openPanel(panelLink);
    } else if (target.closest("[data-gallery-close]")) {
      event.preventDefault();
      close();
    }
  });

  // On the gallery's own page its forms are plain: an approved page's Regenerate asks first.
  if (!dialog) {
    root.addEventListener("submit", (event) => {
      const question = event.target.dataset.confirm;
      if (question && !window.confirm(question)) event.preventDefault();
    });
  }

  // Focus stays inside the dialog: Tab past the last control comes back to the first.
  const focusables = () =>
    Array.from(
      root.querySelectorAll("a[href], button:not([disabled]), input:not([type=hidden]), textarea, select, [tabindex='0']"),
    ).filter((element) => element.getClientRects().length > 0 && !element.closest("[hidden]"));

  document.addEventListener("keydown", (event) => {
    if (!isOpen() || !view()) return;
    if (dialog && event.key === "Tab") {
      const all = focusables();
      if (!all.length) return;
      const first = all[0];
      const last = all[all.length - 1];
      const active = document.activeElement;
      if (!root.contains(active) || (event.shiftKey ? active === first : active === last)) {
        event.preventDefault();
        (event.shiftKey ? last : first).focus();
      }
      return;
    }
    if (event.key === "Escape") {
      event.preventDefault();
      escape();
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey || event.isComposing) return;
    const typing = event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");
    if (typing) return;
    if (event.key === "?") {
      event.preventDefault();
      toggleHelp();
      return;
    }
    if (!help.hidden) return;
    const gallery = view();
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      event.preventDefault();
      step(event.key === "ArrowLeft" ? "previous" : "next");
      return;
    }
    const key = event.key.toLowerCase();
    if (!/^[1-4]$/.test(key) && !(key in KEYS)) return;
    event.preventDefault();
    const control = gallery.querySelector(`[data-gallery-key="${key}"]`);
    if (control && !control.disabled) {
      control.click();
    } else if (/^[1-4]$/.test(key)) {
      const tile = gallery.querySelector(`[data-gallery-tile="${key}"] .gallery__caption > span`);
      tell(tile ? `Picture ${key} is not one to choose: ${tile.textContent.trim()}.` : `There is no picture ${key} here.`);
    } else {
      tell(`${KEYS[key]} is not offered for this page now.`);
    }
  });

  // Swipe: a horizontal stroke on the picture turns the page (vertical ones scroll).
  let stroke = null;
  root.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" || !event.target.closest("[data-gallery-stage]")) return;
    stroke = { id: event.pointerId, x: event.clientX, y: event.clientY };
  });
  root.addEventListener("pointerup", (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    const dx = event.clientX - stroke.x;
    const dy = event.clientY - stroke.y;
    stroke = null;
    if (Math.abs(dx) >= 50 && Math.abs(dx) > 1.5 * Math.abs(dy)) step(dx < 0 ? "next" : "previous");
  });
  root.addEventListener("pointercancel", () => { stroke = null; });

  if (!dialog) shown(null); // the gallery's own page: announce it, fit its pictures
})();
