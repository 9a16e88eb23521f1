// The pairing page: say why we are here after a revocation (the server sends #signed-out).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (location.hash === "#signed-out") {
    document.getElementById("signed-out").hidden = false;
  }
});
