"""Unique tensor/node names for graph rewrites."""

from __future__ import annotations

import onnx


class Names:
    """Every name a graph uses (tensors, nodes, initializers); ``new`` returns an unused one and reserves it."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
        for node in graph.node:
            self.used.update(node.input)
            self.used.update(node.output)
            self.used.add(node.name)

    def new(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name
