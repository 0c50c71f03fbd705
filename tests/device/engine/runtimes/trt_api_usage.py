"""Which TensorRT names the backend uses on each version path, read from its code with ``ast``.

**TensorRT objects.** A value is one when it is typed with a ``Trt*`` alias (``TrtModule``,
``TrtBuilder``, ... defined in the backend's ``util.py`` as ``Name: TypeAlias = Any``): a parameter,
a variable, a class field, ``self.<attr>``, or the return of a backend function (also positionally,
``-> tuple[TrtBuilder, TrtNetwork, ...]``). Anything computed from one is one too: an attribute of
it, the result of calling it or a method on it, a local assigned from it (to a fixed point).

**Uses.** Every attribute read or written on a TensorRT object (``trt.BuilderFlag.FP16`` uses
``BuilderFlag`` and ``FP16``; ``bc.set_flag(...)`` uses ``set_flag``), every keyword argument of a
call to one (``ignore_mismatch=``), ``getattr(obj, "NAME")`` without a default, and every public
method a subclass of a TensorRT class defines (``ILogger.log``, ``IProfiler.report_layer_time``:
TensorRT calls them by name). Python's own dunders (``__init__``) are not TensorRT's to lack.

**Version paths.** A branch guarded by ``hasattr(obj, "NAME")`` runs on a version exactly when that
version has ``NAME`` (by name, as ``trt_bindings`` reads it). The guard may be negated, combined
with ``and`` / ``or``, bound to a local, or be the whole body of a helper (``def f(...): return
hasattr(...)``). ``if``/``else`` and conditional expressions take the branch the guard allows; after
an ``if`` whose taken branch returns or raises, the rest of the block is not on that version's path;
``and`` / ``or`` stop where the guard decides. Everything else is on every version's path.
``getattr(obj, "NAME", default)`` and ``hasattr`` themselves are guards, not uses.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ALIAS_PREFIX = "Trt"
OBJECT_DUNDERS = frozenset(dir(object))

Has = Callable[[str], bool]


@dataclass(frozen=True)
class Use:
    name: str
    where: str  # path:line
    how: str  # attribute, keyword, getattr, override, guard


@dataclass
class Program:
    """What the whole backend declares: aliases, functions returning TensorRT objects, guard helpers, fields."""

    sources: dict[str, ast.Module]
    aliases: set[str] = field(default_factory=set)
    returns: dict[str, bool | tuple[bool, ...]] = field(default_factory=dict)
    guard_functions: dict[str, ast.expr] = field(default_factory=dict)
    fields: set[str] = field(default_factory=set)


def backend_sources(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root.parents[3])): p.read_text() for p in sorted(root.glob("*.py"))}


def _function_body(fn: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``fn``'s body, not descending into nested functions or classes."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def _is_guard_expr(node: ast.expr) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr":
        return len(node.args) == 2 and isinstance(node.args[1], ast.Constant)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _is_guard_expr(node.operand)
    if isinstance(node, ast.BoolOp):
        return all(_is_guard_expr(v) for v in node.values)
    return isinstance(node, ast.Constant) and isinstance(node.value, bool)


def _docless(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    return body[1:] if doc else body


def program(sources: dict[str, str]) -> Program:
    prog = Program({path: ast.parse(src, path) for path, src in sources.items()})
    for tree in prog.sources.values():
        for node in tree.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                ann = node.annotation
                if isinstance(ann, ast.Name) and ann.id == "TypeAlias" and node.target.id.startswith(ALIAS_PREFIX):
                    prog.aliases.add(node.target.id)
    for tree in prog.sources.values():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef):
                prog.returns[fn.name] = _return_kind(prog, fn.returns)
                body = _docless(fn.body)
                one = body[0] if len(body) == 1 else None
                if isinstance(one, ast.Return) and one.value is not None and _is_guard_expr(one.value):
                    prog.guard_functions[fn.name] = one.value
            elif isinstance(fn, ast.ClassDef):
                for item in fn.body:
                    if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                        continue
                    if annotation_is_trt(prog, item.annotation):
                        prog.fields.add(item.target.id)
    return prog


def annotation_is_trt(prog: Program, ann: ast.expr | None) -> bool:
    if isinstance(ann, ast.Name):
        return ann.id in prog.aliases
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):  # TrtEngine | None
        return annotation_is_trt(prog, ann.left) or annotation_is_trt(prog, ann.right)
    return False


def _return_kind(prog: Program, ann: ast.expr | None) -> bool | tuple[bool, ...]:
    if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) and ann.value.id == "tuple":
        elts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
        return tuple(annotation_is_trt(prog, e) for e in elts)
    return annotation_is_trt(prog, ann)


@dataclass
class Scope:
    """TensorRT-typed names visible in one function (or class body), and its local guard variables."""

    env: set[str] = field(default_factory=set)
    self_attrs: set[str] = field(default_factory=set)
    guards: dict[str, ast.expr] = field(default_factory=dict)


class Analyzer:
    """Walks the backend for one version (``has``) and collects the uses on that version's paths."""

    def __init__(self, prog: Program, has: Has) -> None:
        self.prog, self.has = prog, has
        self.uses: list[Use] = []
        self.guards: list[Use] = []  # names asked for with hasattr / getattr(..., default) on TensorRT objects
        self._path = ""

    # -- what is a TensorRT object ------------------------------------------------------------
    def is_trt(self, node: ast.expr, scope: Scope) -> bool:
        if isinstance(node, ast.Name):
            return node.id in scope.env
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in scope.self_attrs:
                return True
            return node.attr in self.prog.fields or self.is_trt(node.value, scope)
        if isinstance(node, ast.Call):
            if self.is_trt(node.func, scope):
                return True
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            return self.prog.returns.get(str(name)) is True
        if isinstance(node, ast.Subscript):
            return self.is_trt(node.value, scope)
        return False

    def _bind(self, fn: ast.AST, scope: Scope) -> None:
        """Add the locals (and ``self.<attr>``) that ``fn`` assigns from TensorRT objects, to a fixed point."""
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            args = fn.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if annotation_is_trt(self.prog, a.annotation):
                    scope.env.add(a.arg)
        while True:
            before = (len(scope.env), len(scope.self_attrs))
            for node in _function_body(fn):
                self._bind_one(node, scope)
            if (len(scope.env), len(scope.self_attrs)) == before:
                return

    def _bind_one(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.AnnAssign):
            if annotation_is_trt(self.prog, node.annotation) or (
                node.value is not None and self.is_trt(node.value, scope)
            ):
                self._bind_target(node.target, scope)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                self._bind_assign(target, node.value, scope)
        elif (
            isinstance(node, ast.withitem) and node.optional_vars is not None and self.is_trt(node.context_expr, scope)
        ):
            self._bind_target(node.optional_vars, scope)

    def _bind_assign(self, target: ast.expr, value: ast.expr, scope: Scope) -> None:
        if isinstance(target, ast.Name) and (_is_guard_expr(value) or self._is_guard_call(value)):
            scope.guards[target.id] = value
        if self.is_trt(value, scope):
            self._bind_target(target, scope)
        elif isinstance(target, ast.Tuple) and isinstance(value, ast.Call):
            name = value.func.id if isinstance(value.func, ast.Name) else getattr(value.func, "attr", None)
            kinds = self.prog.returns.get(str(name))
            if isinstance(kinds, tuple):
                for elt, trt in zip(target.elts, kinds, strict=False):
                    if trt:
                        self._bind_target(elt, scope)

    def _is_guard_call(self, node: ast.expr) -> bool:
        return (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.prog.guard_functions
        )

    @staticmethod
    def _bind_target(target: ast.expr, scope: Scope) -> None:
        if isinstance(target, ast.Name):
            scope.env.add(target.id)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            scope.self_attrs.add(target.attr)

    # -- version paths ----------------------------------------------------------------------
    def guard(self, node: ast.expr, scope: Scope) -> bool | None:
        """True / False where the node is a version guard that this version decides, else None."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "hasattr" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
                return self.has(str(node.args[1].value))
            if node.func.id in self.prog.guard_functions:
                return self.guard(self.prog.guard_functions[node.func.id], scope)
        if isinstance(node, ast.Name) and node.id in scope.guards:
            return self.guard(scope.guards[node.id], scope)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.guard(node.operand, scope)
            return None if inner is None else not inner
        if isinstance(node, ast.BoolOp):
            values = [self.guard(v, scope) for v in node.values]
            stop = isinstance(node.op, ast.Or)  # or: any True decides; and: any False decides
            if stop in values:
                return stop
            return (not stop) if all(v is not None for v in values) else None
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        return None

    # -- walking ----------------------------------------------------------------------------
    def module(self, path: str, tree: ast.Module) -> None:
        self._path = path
        self.block(tree.body, Scope())

    def block(self, body: list[ast.stmt], scope: Scope) -> bool:
        """Visit statements in order; False once the rest is off this version's path (returned or raised)."""
        return all(self.stmt(s, scope) for s in body)

    def stmt(self, node: ast.stmt, scope: Scope) -> bool:
        if isinstance(node, ast.If):
            return self._if(node, scope)
        if isinstance(node, ast.Return | ast.Raise):
            self.children(node, scope)
            return False
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.function(node, scope)
            return True
        if isinstance(node, ast.ClassDef):
            self.klass(node, scope)
            return True
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                self.children(item, scope)
            return self.block(node.body, scope)
        if isinstance(node, ast.For | ast.AsyncFor | ast.While):
            for part in (node.target, node.iter) if not isinstance(node, ast.While) else (node.test,):
                self.expr(part, scope)
            self.block(node.body, scope)
            self.block(node.orelse, scope)
            return True
        if isinstance(node, ast.Try):
            self.block(node.body, scope)
            for handler in node.handlers:
                self.children(handler, scope)
            self.block(node.orelse, scope)
            return self.block(node.finalbody, scope)
        self.children(node, scope)
        return True

    def _if(self, node: ast.If, scope: Scope) -> bool:
        taken = self.guard(node.test, scope)
        self.expr(node.test, scope)
        body_falls = self.block(node.body, scope) if taken is not False else False
        else_falls = self.block(node.orelse, scope) if taken is not True else False
        return body_falls or else_falls

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, outer: Scope) -> None:
        scope = Scope(set(outer.env), outer.self_attrs, dict(outer.guards))
        self._bind(node, scope)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.expr(default, outer)
        self.block(node.body, scope)

    def klass(self, node: ast.ClassDef, outer: Scope) -> None:
        for base in node.bases:
            self.expr(base, outer)
        if any(self.is_trt(base, outer) for base in node.bases):  # TensorRT calls these by name
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    self.uses.append(Use(item.name, f"{self._path}:{item.lineno}", "override"))
        scope = Scope(set(outer.env), set(), dict(outer.guards))
        methods = [m for m in node.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
        while True:  # self.<attr> assigned from TensorRT objects in any method is one in every method
            before = len(scope.self_attrs)
            for m in methods:
                self._bind(m, Scope(set(scope.env), scope.self_attrs, dict(scope.guards)))
            if len(scope.self_attrs) == before:
                break
        self.block(node.body, scope)

    def expr(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.Attribute):
            if self.is_trt(node.value, scope):
                self._use(node.attr, node, "attribute")
            self.expr(node.value, scope)
        elif isinstance(node, ast.Call):
            self._call(node, scope)
        elif isinstance(node, ast.BoolOp):
            decides = isinstance(node.op, ast.Or)
            for value in node.values:
                self.expr(value, scope)
                if self.guard(value, scope) is decides:
                    break  # the rest is not evaluated on this version
        elif isinstance(node, ast.IfExp):
            taken = self.guard(node.test, scope)
            self.expr(node.test, scope)
            if taken is not False:
                self.expr(node.body, scope)
            if taken is not True:
                self.expr(node.orelse, scope)
        elif isinstance(node, ast.Lambda):
            self.expr(node.body, scope)
        else:
            self.children(node, scope)

    def _call(self, node: ast.Call, scope: Scope) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("hasattr", "getattr") and len(node.args) >= 2:
            name, on_trt = node.args[1], self.is_trt(node.args[0], scope)
            if isinstance(name, ast.Constant) and on_trt and func.id == "getattr" and len(node.args) == 2:
                self._use(str(name.value), node, "getattr")
            elif isinstance(name, ast.Constant) and on_trt:  # hasattr, or getattr with a default: a guard
                self.guards.append(Use(str(name.value), f"{self._path}:{node.lineno}", "guard"))
            for arg in node.args:
                self.expr(arg, scope)
            return
        if self.is_trt(func, scope):
            for kw in node.keywords:
                if kw.arg is not None:
                    self._use(kw.arg, node, "keyword")
        self.children(node, scope)

    def children(self, node: ast.AST, scope: Scope) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.stmt(child, scope)
            else:
                self.expr(child, scope)

    def _use(self, name: str, node: ast.AST, how: str) -> None:
        if name not in OBJECT_DUNDERS:
            self.uses.append(Use(name, f"{self._path}:{getattr(node, 'lineno', 0)}", how))


def analyse(sources: dict[str, str], has: Has) -> Analyzer:
    """The TensorRT names the backend uses (and guards on) along the paths that run where ``has`` answers
    for one version's bindings."""
    prog = program(sources)
    analyzer = Analyzer(prog, has)
    for path, tree in prog.sources.items():
        analyzer.module(path, tree)
    return analyzer


def bare_any(sources: dict[str, str]) -> list[str]:
    """Annotations that are plain ``Any``: every value the backend types as Any must say what it is
    (a ``Trt*`` alias for TensorRT's, ``Cudart`` / ``CudaValue`` for cuda-python's)."""
    found = []
    for path, src in sources.items():
        for node in ast.walk(ast.parse(src, path)):
            anns: list[ast.expr | None] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                anns = [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]] + [node.returns]
                anns += [a.annotation for a in (args.vararg, args.kwarg) if a is not None]
            elif isinstance(node, ast.AnnAssign):
                anns = [node.annotation]
            found += [f"{path}:{a.lineno}" for a in anns if isinstance(a, ast.Name) and a.id == "Any"]
    return found
