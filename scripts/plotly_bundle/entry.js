// The dashboard's plotly.js: its core (with scatter) and the other traces autotune.plots draws.
// A figure with any other trace makes the page load the full plotly.min.js (static/app.js).
'use strict';

var Plotly = require('plotly.js/lib/core');

Plotly.register([
    require('plotly.js/lib/bar'),
    require('plotly.js/lib/heatmap'),
    require('plotly.js/lib/contour'),
]);

module.exports = Plotly;
