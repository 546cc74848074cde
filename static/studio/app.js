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
// The review page as a screen for pictures: filters, size slider, card menus, lightbox,
// drawer; and the book preview's keys.
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

  // The lightbox: a picture's link opens it in place of a new page; ← → move between the
  // pages shown, Esc closes (the dialog's own). Without script the link opens the picture.
  const lightbox = document.getElementById("lightbox");
  if (lightbox) {
    const image = lightbox.querySelector(".lightbox__image");
    const caption = lightbox.querySelector(".lightbox__caption");
    let current = null; // the card whose picture is shown
    let opener = null;
    const pictures = () =>
      Array.from(document.querySelectorAll("#page-grid > .card:not([hidden]) a[data-lightbox]"));
    const show = (link) => {
      current = link.closest(".card").id;
      image.src = link.href;
      image.alt = link.dataset.alt;
      caption.textContent = link.dataset.caption;
      lightbox.dataset.page = current;
    };
    const step = (by) => {
      const links = pictures();
      if (!links.length) return;
      const at = links.findIndex((link) => link.closest(".card").id === current);
      const next = links[(at + by + links.length) % links.length];
      show(next);
    };
    body.addEventListener("click", (event) => {
      const link = event.target.closest("a[data-lightbox]");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      opener = link;
      show(link);
      lightbox.showModal();
    });
    lightbox.addEventListener("click", (event) => {
      const stepper = event.target.closest("[data-lightbox-step]");
      if (stepper) step(Number(stepper.dataset.lightboxStep));
      else if (event.target.closest("[data-lightbox-close]") || event.target === lightbox) lightbox.close();
    });
    lightbox.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
      if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
    });
    lightbox.addEventListener("close", () => {
      image.removeAttribute("src");
      const card = current && document.getElementById(current);
      const link = card && card.querySelector("a[data-lightbox]");
      (link || opener)?.focus();
    });
  }

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
