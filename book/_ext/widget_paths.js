// The widget manager (embed-amd.js, taken from its npm package by book/build.py) loads its icon fonts from the
// folder RequireJS gives its module "@jupyter-widgets/html-manager/dist/libembed-amd": by default the page's own
// folder. Point it at this file's folder (the book's _static/widgets, where the fonts are), wherever the page sits.
require.config({
  paths: {"@jupyter-widgets/html-manager/dist": document.currentScript.src.replace(/\/[^/]*$/, "")}
});
