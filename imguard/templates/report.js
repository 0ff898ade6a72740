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

  for (const control of [text, score, method, kind]) control.addEventListener("input", applyFilters);
  sort.addEventListener("change", applySort);
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
})();
