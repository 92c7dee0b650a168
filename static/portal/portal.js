// Copy buttons: <button data-copy="#id"> copies the text of the element it names.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});
// Confirm before destructive actions: <form data-confirm="...">. A form htmx sends asks
// with hx-confirm instead: htmx sends it before this listener hears the submit.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
// Times: the server writes each moment in UTC (<time datetime="…">); show it in the
// viewer's own time zone, on hover for "3 min ago", as the text for data-absolute ones.
const localTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
});
function localizeTimes(root) {
  root.querySelectorAll("time[datetime]").forEach((element) => {
    const moment = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) return;
    const local = localTime.format(moment);
    if (element.hasAttribute("data-absolute")) element.textContent = local;
    else element.title = local;
  });
}
localizeTimes(document);
document.addEventListener("htmx:load", (event) => localizeTimes(event.detail.elt));
