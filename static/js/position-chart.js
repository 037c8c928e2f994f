// Draws a position's mark price and PnL with TradingView Lightweight Charts, refreshed every 2 s.
(function () {
  "use strict";
  var REFRESH_MS = 2000;
  var UNFENCED_COLOR = "#58a6ff";

  function num(value) { return value === null || value === undefined ? null : parseFloat(value); }
  function series(points) { return points.map(function (p) { return { time: p.time, value: num(p.value) }; }); }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  // Prices and amounts as the page writes them: thousands separated by commas, a point
  // before the instrument's tick places (or the currency's), and no "-0.00".
  function numberFormatter(places) {
    var format = new Intl.NumberFormat("en-US", {
      minimumFractionDigits: places, maximumFractionDigits: places, useGrouping: true,
    });
    return function (value) {
      var text = format.format(value);
      return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;
    };
  }

  // Times arrive as UTC seconds; label them in the reader's time zone, as the page does, on
  // a 24-hour clock: a tick mark says the hour and minute (HH:MM), the seconds only where
  // the chart marks a second (TickMarkType.TimeWithSeconds), a day or a month where one begins.
  function tickMark(time, type) {
    var d = new Date(time * 1000);
    switch (type) {
      case 0: return String(d.getFullYear());  // TickMarkType.Year
      case 1: return d.toLocaleDateString([], { month: "short" });  // Month
      case 2: return d.toLocaleDateString([], { month: "short", day: "numeric" });  // DayOfMonth
      case 4: return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
      default: return pad2(d.getHours()) + ":" + pad2(d.getMinutes());  // Time
    }
  }

  // The crosshair's moment: the day and the time to the second (one point a second).
  function moment(time) {
    var d = new Date(time * 1000);
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + tickMark(time, 4);
  }

  function makeChart(element, places) {
    var LC = window.LightweightCharts;
    var chart = LC.createChart(element, {
      autoSize: true,
      layout: { background: { color: "#161b22" }, textColor: "#c9d1d9", attributionLogo: false },
      grid: { vertLines: { color: "#222a33" }, horzLines: { color: "#222a33" } },
      timeScale: {
        timeVisible: true,
        secondsVisible: true,  // lets a tick mark on a second ask for its seconds
        minBarSpacing: 0.01,  // one point a second: an hour's path must fit in a card
        tickMarkFormatter: tickMark,
      },
      localization: { priceFormatter: numberFormatter(places), timeFormatter: moment },
    });
    return chart;
  }

  // The width of a label as the chart writes it, in its own font.
  function textWidth(chart, text) {
    var layout = chart.options().layout;
    var context = document.createElement("canvas").getContext("2d");
    context.font = layout.fontSize + "px " + layout.fontFamily;
    return context.measureText(text).width;
  }

  // The whole path, with a margin on the left so a marker near the entry keeps its label. On
  // the right, a marker at logical index `marker` is kept `room` pixels clear of the pane's
  // edge: a liquidation that is the newest point would otherwise have its label cut off by
  // the edge and hidden under the price lines' titles, which are drawn at the edge. The margin
  // shrinks as the mark goes on after it.
  function showAll(chart, count, marker, room) {
    if (count < 2) { chart.timeScale().fitContent(); return; }
    var pad = Math.max(2, Math.round(count * 0.05));
    var right = pad / 4;
    var width = chart.timeScale().width();
    if (marker !== null && room > 0 && width > 0) {
      // Keep at least a fifth of the pane for the path on a narrow phone.
      var share = Math.min(room / width, 0.8);
      // x(i) is about (i - from + 1/2) / (to - from + 1) of the width.
      right = Math.max(right, (marker + pad + 0.5) / (1 - share) - (count + pad));
    }
    var scale = chart.timeScale();
    scale.setVisibleLogicalRange({ from: -pad, to: count - 1 + right });
    // The chart's own coordinates settle what the estimate left: twice is enough.
    for (var n = 0; marker !== null && room > 0 && width > 0 && n < 2; n += 1) {
      var x = scale.logicalToCoordinate(marker);
      var limit = width - Math.min(room, width * 0.8);
      if (x === null || x <= limit) break;
      var spacing = width / (count - 1 + right + pad);
      right += (x - limit) / spacing + 0.5;
      scale.setVisibleLogicalRange({ from: -pad, to: count - 1 + right });
    }
  }

  // The pixels a marker needs between it and the pane's right edge: half its label, and the
  // widest price-line title drawn there (the title's padding and border take about 16 px).
  function markerRoom(chart, titles, labels) {
    var title = 0, label = 0;
    titles.forEach(function (t) { title = Math.max(title, textWidth(chart, t) + 16); });
    labels.forEach(function (t) { label = Math.max(label, textWidth(chart, t) / 2); });
    return title + label + 8;
  }

  // Keep the price lines (entry, LP, BP) and the loss floor inside the visible range.
  function includeLevels(levels) {
    return function (original) {
      var result = original();
      var values = levels().filter(function (v) { return v !== null && !isNaN(v); });
      if (!values.length) return result;
      var low = Math.min.apply(null, values), high = Math.max.apply(null, values);
      if (result && result.priceRange) {
        low = Math.min(low, result.priceRange.minValue);
        high = Math.max(high, result.priceRange.maxValue);
      }
      var pad = (high - low) * 0.05 || Math.abs(high) * 0.01 || 1;
      return { priceRange: { minValue: low - pad, maxValue: high + pad } };
    };
  }

  function start() {
    var markEl = document.getElementById("mark-chart");
    var pnlEl = document.getElementById("pnl-chart");
    if (!markEl || !pnlEl || !window.LightweightCharts) return;
    var LC = window.LightweightCharts;
    var url = markEl.dataset.url;
    var markChart, pnlChart, markSeries, pnlSeries, unfencedSeries, floorSeries, markers, lines = [];
    var latest = null;
    var following = true;  // the charts show the whole path until the reader moves them
    [markEl, pnlEl].forEach(function (element) {
      ["wheel", "pointerdown", "touchstart"].forEach(function (name) {
        element.addEventListener(name, function () { following = false; }, { passive: true });
      });
    });
    function markLevels() {
      if (!latest) return [];
      return [num(latest.lines.entry), num(latest.lines.liquidation), num(latest.lines.bankruptcy)];
    }
    function pnlLevels() {
      return latest ? [0].concat(latest.floor.map(function (p) { return num(p.value); })) : [];
    }

    function draw(data) {
      latest = data;
      if (!markChart) {
        markChart = makeChart(markEl, data.price_places);
        pnlChart = makeChart(pnlEl, data.money_places);
        markSeries = markChart.addSeries(LC.LineSeries, {
          color: "#f0b90b", lineWidth: 2, autoscaleInfoProvider: includeLevels(markLevels),
        });
        pnlSeries = pnlChart.addSeries(LC.BaselineSeries, {
          baseValue: { type: "price", price: 0 },
          autoscaleInfoProvider: includeLevels(pnlLevels),
          topLineColor: "#0ecb81", bottomLineColor: "#f6465d",
          topFillColor1: "rgba(14,203,129,0.25)", topFillColor2: "rgba(14,203,129,0.02)",
          bottomFillColor1: "rgba(246,70,93,0.02)", bottomFillColor2: "rgba(246,70,93,0.25)",
        });
        unfencedSeries = pnlChart.addSeries(LC.LineSeries, {
          // Secondary to the PnL, yet plain to see on the dark chart: a blue of its own,
          // dashed, 6.8:1 on the chart's background (the entry's grey was lost in the grid).
          color: UNFENCED_COLOR, lineWidth: 2, lineStyle: LC.LineStyle.Dashed, title: "without the ring-fence",
          lastValueVisible: false, priceLineVisible: false,
        });
        // The most the position can lose, moment by moment: it steps where margin was added or
        // taken out and where a close realised PnL and released collateral.
        floorSeries = pnlChart.addSeries(LC.LineSeries, {
          color: "#f6465d", lineWidth: 2, lineType: LC.LineType.WithSteps, title: "your maximum loss",
          priceLineVisible: false, crosshairMarkerVisible: false,
        });
        markers = LC.createSeriesMarkers(markSeries, []);
        // The charts as drawn, for a reader's console (and the browser tests) to ask what
        // they were configured with.
        window.ringfencePositionChart = {
          mark: markChart, pnl: pnlChart, markSeries: markSeries, pnlSeries: pnlSeries,
          floor: floorSeries, unfenced: unfencedSeries, markers: markers,
          lines: function () { return lines; },
        };
        markChart.timeScale().subscribeVisibleTimeRangeChange(function (range) {
          if (range) markEl.dataset.visibleFrom = String(range.from);  // what the reader sees
        });
      }
      unfencedSeries.setData(series(data.pnl_unfenced || []));
      markSeries.setData(series(data.mark));
      pnlSeries.setData(series(data.pnl));
      lines.forEach(function (l) { markSeries.removePriceLine(l); });
      lines = [];
      var specs = [
        ["entry", "Entry", "#8a94a6"],
        ["liquidation", "Liquidation", "#f6465d"],
        ["bankruptcy", "Bankruptcy", "#a371f7"],
      ];
      specs.forEach(function (s) {
        var price = num(data.lines[s[0]]);
        if (price !== null) {
          lines.push(markSeries.createPriceLine({ price: price, color: s[2], lineWidth: 1, lineStyle: 2, axisLabelVisible: true, title: s[1] }));
        }
      });
      floorSeries.setData(series(data.floor));
      markers.setMarkers(data.markers.map(function (m) {
        return {
          time: m.time, text: m.text, position: m.kind === "liquidation" ? "belowBar" : "aboveBar", shape: m.kind === "liquidation" ? "arrowUp" : "circle",
          color: m.kind === "liquidation" ? "#f6465d" : "#f0b90b",
        };
      }));
      // Show the whole path when the page opens and again when the position ends (the
      // liquidation is the lesson), and keep it whole as new marks come in until the reader
      // zooms or scrolls a chart: left to itself the chart slides its window along with every
      // new mark, and a short-lived position's entry and liquidation slid out of view within
      // seconds of the liquidation, while the page still told of them.
      if (markEl.dataset.status !== data.status) following = true;
      if (following) {
        var liquidation = data.markers.filter(function (m) { return m.kind === "liquidation"; })[0];
        var indexOf = function (points) {
          if (!liquidation) return null;
          var i = 0;
          while (i < points.length - 1 && points[i].time < liquidation.time) i += 1;
          return i;
        };
        var titles = lines.map(function (l) { return l.options().title; });
        // On the PnL chart the series' titles sit at the right edge, over where the line
        // without the ring-fence parts from the PnL: the liquidation is kept clear of them too.
        var room = liquidation ? markerRoom(markChart, titles, [liquidation.text]) : 0;
        var pnlRoom = liquidation ? markerRoom(pnlChart, ["your maximum loss", "without the ring-fence"], []) : 0;
        showAll(markChart, data.mark.length, indexOf(data.mark), room);
        showAll(pnlChart, data.pnl.length, indexOf(data.pnl), pnlRoom);
      }
      markEl.dataset.points = String(data.mark.length);
      markEl.dataset.status = data.status;
      markEl.dataset.ready = "true";
    }

    var timer = null;
    function load() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) return;
          draw(data);
          // A position closed by hand has drawn its whole path; a liquidated one goes on
          // drawing the mark after the liquidation, which is its lesson.
          if (data.status === "closed" && timer !== null) {
            window.clearInterval(timer);
            timer = null;
          }
        })
        .catch(function () { /* the next refresh tries again */ });
    }
    load();
    timer = window.setInterval(load, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
