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
dict, for the same length: one that raises (a user's check of the loaded states), or returns a value
(torch raises then), calls ``on_error`` and removes every wrapper too, so the module is put back and
nothing of the load stays on its descendants, whoever called ``load_state_dict``. The wrappers exist
only between the module's ``_load_from_state_dict`` and the end of its load, so nothing costs
anything outside a load.

:func:`put_back_whole` tells a descendant's load that an enclosing guard puts it back if the load
fails for its entries, so that it need not record its own state too (:func:`snapshot
<torchmetrics_ext.utilities.snapshot.snapshot>` walks everything the module holds, which a module of
many metrics would otherwise do once per metric and once more for each metric's wrapper): inside a
guarded descendant's ``_load_from_state_dict``, and inside a :func:`putting_back_whole` (a metric's
own ``load_state_dict``, which puts the metric back whenever the load raises). It answers for one
``nn.Module.load_state_dict`` call only, told by its error list (the ``error_msgs`` torch hands every
module it loads): a load that a hook starts inside it is not covered.

:func:`loading_strictly` tells such a post-hook whether the load will refuse missing and unexpected
keys: torch applies ``strict`` only after the last post-hook has run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import nn

from torchmetrics_ext.utilities.frames import running_locals

__all__ = [
    "guard_descendant_loads",
    "loading_strictly",
    "put_back_whole",
    "putting_back_whole",
    "without_load_wrappers",
]

_METHOD = "_load_from_state_dict"
_STALE = "tmx_guard_removed"  # on a load wrapper: tells whether its guard has removed its wrappers
_SHADOWED = "tmx_shadowed"  # on a load wrapper: the module's own instance attribute it stands over, if any
_ERRORS_AT = 6  # the position of ``error_msgs`` among the arguments torch passes to ``_load_from_state_dict``
# the load whose failure an enclosing guard puts back whole: its error list, or the module whose own
# ``load_state_dict`` is about to start it (see put_back_whole)
_PUT_BACK_WHOLE: ContextVar[list[Any] | nn.Module | None] = ContextVar("tmx_put_back_whole", default=None)


@contextmanager
def putting_back_whole(root: nn.Module) -> Iterator[None]:
    """Within it, the load ``root.load_state_dict`` starts is put back whole by the caller if it fails.

    For a module's own ``load_state_dict`` that puts the module back whenever the load raises (every
    failure of a descendant's load makes it raise): its descendants' loads skip recording their own
    state (:func:`put_back_whole`).

    Examples:
        >>> from torch import nn
        >>> layer, errors, other_errors = nn.Linear(1, 1), [], []
        >>> with putting_back_whole(layer):  # the layer's load, then a load a hook starts inside it
        ...     print(put_back_whole(layer, errors), put_back_whole(layer, errors), put_back_whole(layer, other_errors))
        True True False
        >>> put_back_whole(layer, errors)
        False
    """
    token = _PUT_BACK_WHOLE.set(root)
    try:
        yield
    finally:
        _PUT_BACK_WHOLE.reset(token)


def put_back_whole(module: nn.Module, error_msgs: list[Any]) -> bool:
    """Whether an enclosing guard puts ``module`` back if this load (of error list ``error_msgs``) fails for it.

    True inside a descendant's load guarded by :func:`guard_descendant_loads` and in the load started
    by a :func:`putting_back_whole` of ``module`` or of a module holding it: the enclosing guard's
    conditions include the module's own (an error, or in a strict load a missing or unexpected key
    under the module's prefix, makes the whole load fail). False elsewhere, also in a load that a
    hook starts inside such a load (another error list).
    """
    cover = _PUT_BACK_WHOLE.get()
    if cover is module:  # the first module the load reaches: the load of `putting_back_whole(module)`
        _PUT_BACK_WHOLE.set(error_msgs)  # its descendants share the list; `putting_back_whole` resets it
        return True
    return cover is error_msgs


def guard_descendant_loads(
    root: nn.Module,
    on_error: Callable[[], None],
    errors: list[Any] | None = None,
    hooks_before: Any = None,
) -> Callable[[], None]:
    """Until the returned function runs, a ``_load_from_state_dict`` raising under ``root`` calls ``on_error`` first.

    The guarded descendants' loads run with :func:`put_back_whole` true: the caller puts ``root``
    back, all of it, when the load fails for any of its descendants' entries.

    Args:
        root: the module whose descendants (not ``root`` itself) are guarded.
        on_error: called once, on the first exception, after the wrappers are removed; the
            exception then propagates as it was raised.
        errors: the error list of the load being guarded (the ``error_msgs`` of ``root``'s
            ``_load_from_state_dict``). A descendant's load in another load (the guarded one ended
            where no wrapper saw it: an exception in torch's own code between two calls) removes
            every wrapper and runs unguarded, without ``on_error``.
        hooks_before: the key of one of ``root``'s own load post-hooks: those registered before it,
            which torch runs after the descendants' loads and before it, are guarded too.

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

    def wrap(module: nn.Module, load: Callable[..., None]) -> Callable[..., None]:
        def guarded_load(*args: Any, **kwargs: Any) -> None:
            load_errors = args[_ERRORS_AT] if len(args) > _ERRORS_AT else kwargs.get("error_msgs")
            if errors is not None and load_errors is not errors:  # the guarded load is over: unguarded
                remove()
                if module.__dict__.get(_METHOD) is guarded_load:  # put back since (by a record taken before)
                    del module.__dict__[_METHOD]
                load(*args, **kwargs)
                return
            token = _PUT_BACK_WHOLE.set(load_errors)
            try:
                load(*args, **kwargs)
            except BaseException:
                failed()
                raise
            finally:
                _PUT_BACK_WHOLE.reset(token)

        guarded_load.__dict__[_STALE] = lambda: not installed  # see _drop_stale
        if _METHOD in module.__dict__:  # a copy made during the load gets it back (see without_load_wrappers)
            guarded_load.__dict__[_SHADOWED] = module.__dict__[_METHOD]
        return guarded_load

    def wrap_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
        def guarded_hook(*args: Any, **kwargs: Any) -> Any:
            try:
                result = hook(*args, **kwargs)
            except BaseException:
                failed()
                raise
            if result is not None:  # torch raises for a load post-hook that returns a value
                failed()
            return result

        guarded_hook.__dict__.update({_STALE: lambda: not hooks, "__wrapped__": hook})
        return guarded_hook

    def wrap_hooks(registered: dict[Any, Any], until: Any = None) -> None:
        for key, hook in list(registered.items()):
            if key == until:
                break
            while getattr(hook, "__dict__", {}).get(_STALE, lambda: False)():  # see _drop_stale
                hook = registered[key] = hook.__wrapped__
            hooks.append((registered, key, hook, wrap_hook(hook)))
            registered[key] = hooks[-1][3]

    for module in root.modules():
        if module is not root:
            _drop_stale(module)
            installed.append((module, _METHOD in module.__dict__, module.__dict__.get(_METHOD)))
            module.__dict__[_METHOD] = wrap(module, getattr(module, _METHOD))
            wrap_hooks(module._load_state_dict_post_hooks)
    if hooks_before is not None:
        wrap_hooks(root._load_state_dict_post_hooks, until=hooks_before)
    return remove


def _drop_stale(module: nn.Module) -> None:
    """Remove from ``module`` a load wrapper of a guard already removed.

    A record of the module taken while the wrapper stood (its own ``load_state_dict``, after its
    parent's load ended where no wrapper saw it) puts it back when that load fails. Its hooks'
    stale wrappers are unwrapped alike as they are wrapped again.
    """
    wrapper = module.__dict__.get(_METHOD)
    stale = getattr(wrapper, "__dict__", {}).get(_STALE)
    if stale is not None and stale():
        del module.__dict__[_METHOD]


def without_load_wrappers(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a module's ``__getstate__``) without the wrappers a guard has put on the module for a load.

    A copy or pickle made while a load is in progress (from a user's load hook) must not take them
    along: a load wrapper calls the original module's ``_load_from_state_dict`` (a later load of the
    copy would load the original), and both are local functions, which pickle refuses. The copy gets
    the module's own method and hooks instead; the original keeps its wrappers until its load ends.

    Examples:
        >>> from torch import nn
        >>> parent, child = nn.Module(), nn.Linear(1, 1)
        >>> parent.add_module("child", child)
        >>> remove = guard_descendant_loads(parent, lambda: None)
        >>> copied = without_load_wrappers(dict(child.__dict__))
        >>> "_load_from_state_dict" in copied, "_load_from_state_dict" in child.__dict__
        (False, True)
        >>> remove()
    """
    while _STALE in getattr(state.get(_METHOD), "__dict__", {}):  # a guard's wrapper, over another's perhaps
        wrapper = state.pop(_METHOD)
        if _SHADOWED in wrapper.__dict__:
            state[_METHOD] = wrapper.__dict__[_SHADOWED]
    hooks = state.get("_load_state_dict_post_hooks")
    if hooks and any(_STALE in getattr(hook, "__dict__", {}) for hook in hooks.values()):
        unwrapped = type(hooks)(hooks)  # a new dict of the same kind: the original's stays as it is
        for key, hook in unwrapped.items():
            while _STALE in getattr(hook, "__dict__", {}):
                hook = hook.__wrapped__
            unwrapped[key] = hook
        state["_load_state_dict_post_hooks"] = unwrapped
    return state


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
    local = running_locals(nn.Module.load_state_dict.__code__, inspect.currentframe())
    return bool(local.get("strict", False)) if local is not None else False
