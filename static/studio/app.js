// Toasts arrive in the HX-Trigger header as {"toast": {"level", "message"}}.
// Text is set with textContent, never innerHTML.
document.addEventListener("DOMContentLoaded", () => {
  const toasts = document.getElementById("toasts");
  document.body.addEventListener("toast", (event) => {
    const toast = document.createElement("p");
    toast.className = `toast toast--${event.detail.level || "info"}`;
    toast.textContent = event.detail.message;
    toasts.appendChild(toast);
    setTimeout(() => toast.remove(), 5000);
  });
});
