// Small progressive enhancements; every page works without them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filters that apply as soon as they change.
  for (const field of document.querySelectorAll("[data-autosubmit]")) {
    field.addEventListener("change", () => document.getElementById(field.getAttribute("form")).requestSubmit());
  }
  const video = document.getElementById("player");
  if (video) setUpPlayer(video);
});

// The player starts at the matching moment (the #t=start,end fragment does it too) and marks it on a timeline.
function setUpPlayer(video) {
  const start = parseFloat(video.dataset.start);
  const end = parseFloat(video.dataset.end);
  const mark = document.getElementById("moment-mark");
  const head = document.getElementById("playhead");
  const label = document.getElementById("moment-label");
  const hasMoment = Number.isFinite(start) && Number.isFinite(end);

  const duration = () => (Number.isFinite(video.duration) && video.duration > 0 ? video.duration
    : parseFloat(video.dataset.duration) || 0);

  function place() {
    const total = duration();
    if (!hasMoment || !total || !mark) return;
    mark.style.left = `${(100 * start) / total}%`;
    mark.style.width = `${Math.max(0.5, (100 * (end - start)) / total)}%`;
  }

  video.addEventListener("loadedmetadata", () => {
    if (hasMoment && Math.abs(video.currentTime - start) > 0.25) video.currentTime = start;
    place();
  });
  video.addEventListener("timeupdate", () => {
    const total = duration();
    if (head && total) head.style.left = `${(100 * video.currentTime) / total}%`;
    if (label && hasMoment) {
      label.classList.toggle("inside", video.currentTime >= start - 0.05 && video.currentTime <= end + 0.05);
    }
  });
  const replay = document.getElementById("replay-moment");
  if (replay) {
    replay.addEventListener("click", () => {
      video.currentTime = start;
      video.play();
    });
  }
  place();
}
