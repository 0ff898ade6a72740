"use strict";
// Filters and sorting of the evidence report. Reads the data attributes the page was written
// with; never writes markup (no innerHTML): the page's strings stay text.
(function () {
  const main = document.getElementById("listings");
  const sections = Array.from(main.querySelectorAll("section.listing"));
  const text = document.getElementById("filter-text");
  const score = document.getElementById("filter-score");
  const method = document.getElementById("filter-method");
  const kind = document.getElementById("filter-kind");
  const status = document.getElementById("filter-status");
  const sort = document.getElementById("sort");
  const counts = {
    listings: document.getElementById("count-listings"),
    images: document.getElementById("count-images"),
    pairs: document.getElementById("count-pairs"),
  };

  function applyFilters() {
    const words = text.value.trim().toLowerCase();
    const least = parseFloat(score.value) || 0;
    let listings = 0, images = 0, pairs = 0;
    for (const section of sections) {
      let shownImages = 0;
      for (const article of section.querySelectorAll("article.stolen")) {
        let shownPairs = 0;
        for (const pair of article.querySelectorAll(".pair")) {
          const haystack = section.dataset.search + " " + pair.dataset.search;
          const visible = parseFloat(pair.dataset.score) >= least
            && (!method.value || pair.dataset.method === method.value)
            && (!kind.value || pair.dataset.kind === kind.value)
            && (!status || !status.value || pair.dataset.status === status.value)
            && (!words || haystack.includes(words));
          pair.hidden = !visible;
          shownPairs += visible ? 1 : 0;
        }
        article.hidden = shownPairs === 0;
        shownImages += shownPairs ? 1 : 0;
        pairs += shownPairs;
      }
      section.hidden = shownImages === 0;
      listings += shownImages ? 1 : 0;
      images += shownImages;
    }
    counts.listings.textContent = String(listings);
    counts.images.textContent = String(images);
    counts.pairs.textContent = String(pairs);
  }

  const orders = {
    score: (a, b) => parseFloat(b.dataset.best) - parseFloat(a.dataset.best)
      || a.dataset.listing.localeCompare(b.dataset.listing),
    listing: (a, b) => a.dataset.listing.localeCompare(b.dataset.listing),
    images: (a, b) => parseInt(b.dataset.images, 10) - parseInt(a.dataset.images, 10)
      || a.dataset.listing.localeCompare(b.dataset.listing),
  };

  function applySort() {
    const ordered = sections.slice().sort(orders[sort.value] || orders.score);
    for (const section of ordered) main.appendChild(section);
  }

  for (const control of [text, score, method, kind, status]) {
    if (control) control.addEventListener("input", applyFilters);
  }
  sort.addEventListener("change", applySort);

  // Decisions per finding (nightly reports): kept in the page, exported as one JSON file for
  // `imguard mark --from`. Nothing is sent anywhere: there is no server.
  const decisions = new Map();
  const exportButton = document.getElementById("export");
  for (const pair of main.querySelectorAll(".pair[data-finding]")) {
    for (const button of pair.querySelectorAll("button.decision")) {
      button.addEventListener("click", () => {
        const finding = parseInt(pair.dataset.finding, 10);
        const chosen = decisions.get(finding) === button.dataset.mark ? null : button.dataset.mark;
        if (chosen) decisions.set(finding, chosen); else decisions.delete(finding);
        for (const other of pair.querySelectorAll("button.decision")) {
          other.setAttribute("aria-pressed", String(other.dataset.mark === chosen));
        }
        pair.querySelector(".chosen").textContent = chosen || "reported";
        document.getElementById("decided").textContent = String(decisions.size);
        exportButton.disabled = decisions.size === 0;
      });
    }
  }
  if (exportButton) {
    exportButton.addEventListener("click", () => {
      const body = {imguard: "decisions", version: 1,
                    decisions: Array.from(decisions, ([finding, mark]) => ({finding, mark}))};
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([JSON.stringify(body, null, 2)], {type: "application/json"}));
      link.download = "imguard-decisions.json";
      document.body.appendChild(link);
      link.click();
      link.remove();
    });
  }
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
})();
