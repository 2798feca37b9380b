"""The kernel methods, one module each, and the request they share (:mod:`.request`).

``jacobian`` (and ``jacobian_loop``), ``ntk_vp`` and ``structured`` each provide ``cost(request)`` and
``compute(request)``; :mod:`ntkmonitor.kernel` registers them, chooses among them and finishes their results.
"""
