// Small progressive enhancements; every page works without them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filters that apply as soon as they change.
  for (const field of document.querySelectorAll("[data-autosubmit]")) {
    field.addEventListener("change", () => document.getElementById(field.getAttribute("form")).requestSubmit());
  }
  const video = document.getElementById("player");
  if (video) setUpPlayer(video);
  const example = document.getElementById("example-form");
  if (example) setUpExampleSearch(example);
});

// Search by example: a video file goes to the clip search, an image to the image search (without this script, the
// server searches a file the browser calls a video as a clip). A file dropped anywhere on the page is searched at once.
const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|ts)$/i;

function setUpExampleSearch(form) {
  const input = form.querySelector("input[type=file]");
  const route = (file) => {
    const isVideo = file.type.startsWith("video/") || (!file.type.startsWith("image/") && VIDEO_NAME.test(file.name));
    form.action = isVideo ? form.dataset.clipAction : form.dataset.imageAction;
    input.name = isVideo ? "clip" : "image";
  };
  input.addEventListener("change", () => {
    if (input.files.length) route(input.files[0]);
  });
  const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();  // accept the drop here rather than let the browser open the file
      event.dataTransfer.dropEffect = "copy";
      document.body.classList.add("dropping");
    });
  }
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) document.body.classList.remove("dropping");  // left the window
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    document.body.classList.remove("dropping");
    const file = event.dataTransfer.files[0];
    if (!file) return;
    const chosen = new DataTransfer();
    chosen.items.add(file);
    input.files = chosen.files;
    route(file);
    form.requestSubmit();
  });
}

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
