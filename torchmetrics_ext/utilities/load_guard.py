"""Run a function when a descendant's load raises, also in a load started by a parent module.

``nn.Module.load_state_dict`` calls a module's ``_load_from_state_dict``, then loads each child in
turn, then runs the module's load post-hooks. A module that loads all or nothing
(:class:`~torchmetrics_ext.RecMetricModule`) records its state in its own ``_load_from_state_dict``
and puts it back from a post-hook when the load of its entries failed; but a descendant that
*raises* (rather than reporting an error) ends the load before that post-hook, and when a parent
module is loaded (``parent.load_state_dict``, Lightning's checkpoint restore) no frame of the module
encloses its descendants' loads to catch the exception: its first metrics stayed loaded.

:func:`guard_descendant_loads` gives it that frame. For the length of one load each descendant's
``_load_from_state_dict`` (the method torch calls on every module it loads) is shadowed in the
descendant's instance ``__dict__`` by a wrapper that calls the descendant's own method and, if it
raises, first calls ``on_error`` (once, removing every wrapper) and then lets the exception go on.
TorchMetrics keeps per-instance wrappers of ``update`` and ``compute`` the same way. A descendant's
load post-hooks (``register_load_state_dict_post_hook``: torch calls them after the descendant's
children have loaded, outside any of its methods) are wrapped alike, in the descendant's own hook
dict, for the same length: one that raises (a user's check of the loaded states) calls ``on_error``
and removes every wrapper too, so the module is put back and nothing of the load stays on its
descendants, whoever called ``load_state_dict``. The wrappers exist only between the module's
``_load_from_state_dict`` and the end of its load, so nothing costs anything outside a load.

:func:`loading_strictly` tells such a post-hook whether the load will refuse missing and unexpected
keys: torch applies ``strict`` only after the last post-hook has run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["guard_descendant_loads", "loading_strictly"]

_METHOD = "_load_from_state_dict"


def guard_descendant_loads(root: nn.Module, on_error: Callable[[], None]) -> Callable[[], None]:
    """Until the returned function runs, a ``_load_from_state_dict`` raising under ``root`` calls ``on_error`` first.

    Args:
        root: the module whose descendants (not ``root`` itself) are guarded.
        on_error: called once, on the first exception, after the wrappers are removed; the
            exception then propagates as it was raised.

    Returns:
        The function that removes every wrapper (safe to call again): call it when the load ends.

    Examples:
        >>> from torch import nn
        >>> parent, child = nn.Module(), nn.Linear(1, 1)
        >>> parent.add_module("child", child)
        >>> def broken(*args, **kwargs):
        ...     raise KeyError("broken")
        >>> child._load_from_state_dict = broken
        >>> calls = []
        >>> remove = guard_descendant_loads(parent, lambda: calls.append("put back"))
        >>> try:
        ...     parent.load_state_dict(parent.state_dict())
        ... except KeyError:
        ...     pass
        >>> calls, child.__dict__["_load_from_state_dict"] is broken
        (['put back'], True)
    """
    installed: list[tuple[nn.Module, bool, Any]] = []
    hooks: list[tuple[dict[Any, Any], Any, Any, Any]] = []  # (hook dict, key, the hook, its wrapper)

    def remove() -> None:
        while installed:
            module, shadowed, previous = installed.pop()
            if shadowed:  # an instance attribute of its own (a test's patch): put back
                module.__dict__[_METHOD] = previous
            else:
                module.__dict__.pop(_METHOD, None)
        while hooks:
            registered, key, hook, wrapper = hooks.pop()
            if registered.get(key) is wrapper:  # not removed (nor replaced) by its handle since
                registered[key] = hook

    def failed() -> None:
        if installed or hooks:  # the first exception of this load: the wrappers still stand
            remove()
            on_error()

    def wrap(load: Callable[..., None]) -> Callable[..., None]:
        def guarded_load(*args: Any, **kwargs: Any) -> None:
            try:
                load(*args, **kwargs)
            except BaseException:
                failed()
                raise

        return guarded_load

    def wrap_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
        def guarded_hook(*args: Any, **kwargs: Any) -> Any:
            try:
                return hook(*args, **kwargs)
            except BaseException:
                failed()
                raise

        return guarded_hook

    for module in root.modules():
        if module is not root:
            installed.append((module, _METHOD in module.__dict__, module.__dict__.get(_METHOD)))
            module.__dict__[_METHOD] = wrap(getattr(module, _METHOD))
            registered = module._load_state_dict_post_hooks
            for key, hook in list(registered.items()):
                hooks.append((registered, key, hook, wrap_hook(hook)))
                registered[key] = hooks[-1][3]
    return remove


def loading_strictly() -> bool:
    """The ``strict`` of the ``nn.Module.load_state_dict`` running now; ``False`` where none is found.

    torch passes ``strict=True`` to every ``_load_from_state_dict`` and hook and applies the caller's
    ``strict`` to the missing and unexpected keys only after the last hook, so it is read from the
    call itself (the innermost one: a parent module's when a parent is loaded). Not found (a load by
    other means), a load is taken as not strict: never put back for keys that such a load may accept.

    Examples:
        >>> from torch import nn
        >>> seen = []
        >>> layer = nn.Linear(1, 1)
        >>> _ = layer.register_load_state_dict_post_hook(lambda module, keys: seen.append(loading_strictly()))
        >>> _ = layer.load_state_dict(layer.state_dict(), strict=False)
        >>> seen, loading_strictly()
        ([False], False)
    """
    code = nn.Module.load_state_dict.__code__
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code is code:
            return bool(frame.f_locals.get("strict", False))
        frame = frame.f_back
    return False
