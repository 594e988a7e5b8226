// ipywidgets' html-manager typesets widget labels through the MathJax 2 API
// (MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])). The book loads MathJax 3, which has
// no Hub, so every widget label threw "Cannot read properties of undefined (reading 'Queue')".
// This shim translates those calls to MathJax 3's typesetPromise, queueing any that arrive
// before MathJax has started. It must run after Sphinx's `window.MathJax = {...}` config and
// before MathJax itself (which is deferred).
(function () {
  var pending = [];
  function typeset(element) {
    var mj = window.MathJax;
    if (mj && typeof mj.typesetPromise === "function") {
      mj.typesetPromise(element ? [element] : undefined).catch(function () {});
    } else {
      pending.push(element);
    }
  }
  var hub = {
    Queue: function () {
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (Array.isArray(job) && job[0] === "Typeset") typeset(job[2]);
      }
    },
  };
  var config = (window.MathJax = window.MathJax || {});
  config.Hub = hub;
  config.startup = config.startup || {};
  config.startup.ready = function () {
    window.MathJax.startup.defaultReady();
    window.MathJax.Hub = hub;
    pending.splice(0).forEach(typeset);
  };
})();
