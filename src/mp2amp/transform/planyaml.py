"""Reading a tracking-plan file as YAML, before its rules are checked (``plan.load_plan``).

A plan is a few KB that people write: what YAML allows beyond that is refused with a
problem naming the line rather than followed. Aliases (``*name``) may repeat rules, but
not multiply them: a 1 KB "alias bomb" (aliases of aliases, nine levels) stands for
hundreds of millions of values, which anything that walks it (a problem message) spells
out. Keys given twice in one mapping are noted (YAML keeps only the last) and returned
beside the data, so that they are reported together with the plan's other problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from mp2amp.errors import ConfigError

MAX_ALIASED = 100_000
"""The values all aliases of a plan may stand for, together: thousands of property rules
reusing an anchored rule each stay far below; aliases of aliases soon pass it."""


def read_plan_yaml(path: str | Path) -> tuple[Any, list[str]]:
    """The plan file's data and the problems its keys given twice make; raise ConfigError
    (naming the line where known) when it cannot be read as YAML at all."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write
    except OSError as exc:
        raise ConfigError([f"cannot read the tracking plan: {exc.strerror or exc}"],
                          source=source) from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError([f"line {line}: the tracking plan is not UTF-8 text (byte "
                           f"0x{exc.object[exc.start]:02x}); save it as UTF-8 and run again"],
                          source=source) from None
    loader = _PlanLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc)], source=source) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(["the tracking plan is nested too deeply to read (hundreds of "
                           "levels; a plan needs four): fix the brackets or indentation and "
                           "run again"], source=source) from None
    except ValueError as exc:  # a value YAML reads but Python will not build (an integer
        # of more than 4300 digits)
        raise ConfigError([f"a value in the tracking plan cannot be read: {exc}; fix it and "
                           "run again"], source=source) from None
    finally:
        loader.dispose()
    return data, loader.duplicates


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}{problem}" if isinstance(exc, _Refused) else f"{where}not valid YAML: {problem}"


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a tracking plan does not use (see the module docstring)."""


class _PlanLoader(yaml.SafeLoader):
    """PyYAML's safe loader, noting keys given twice in one mapping (YAML keeps only the
    last, so ``email: {drop: true}`` followed by ``email: {user_property: true}`` would
    send what the first said to drop) and bounding what aliases stand for."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self.aliased = 0  # values the aliases met so far stand for
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, once known

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # (stubs)
            node = self.anchors.get(event.anchor)
            if node is not None:  # (else PyYAML names the undefined alias)
                self._count_alias(event.anchor, node, event.start_mark)
        return super().compose_node(parent, index)

    def _count_alias(self, anchor: str, node: Node, mark: yaml.Mark) -> None:
        if node.end_mark is None:  # still being composed: the alias is inside its anchor
            raise _Refused(None, None, f"the alias *{anchor} is inside the value it names (a "
                           "loop without end); write the value out", mark)
        self.aliased += _size(node, self._sizes)
        if self.aliased > MAX_ALIASED:
            raise _Refused(None, None, f"the aliases up to *{anchor} stand for more than "
                           f"{MAX_ALIASED} values in all (aliases of aliases multiply); a "
                           "tracking plan needs far fewer: write the repeated rules out",
                           mark)


def _size(root: Node, sizes: dict[int, int]) -> int:
    """How many values ``root`` stands for with every alias in it spelt out; without
    recursion (a plan can nest deep) and with each node counted once (``sizes``)."""
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _noting_duplicates(loader: _PlanLoader, node: MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below names it
            continue
        if first is None:
            seen[key] = line
            continue
        where = "on the same line" if first == line else f"also on line {first}"
        shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
        loader.duplicates.append(f"line {line}: {shown} is given twice in one mapping "
                                 f"({where}); YAML would keep only the last: merge the two")
    return loader.construct_mapping(node, deep=deep)


_PlanLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _noting_duplicates)
