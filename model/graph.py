"""Exact rewrites of an ONNX generator's graph that run faster; applied when a backend loads a file.

``subpixel_tail``: a convolution that follows a pixel shuffle (``DepthToSpace``,
through per-channel element-wise operations such as PReLU) is computed on the
tensor *before* the shuffle instead, then shuffled. SRResNet's 9x9 tail (64
channels in, 3 out, at output resolution) becomes a 5x5 convolution with 256
channels in and 12 out at half the output resolution, followed by a shuffle
of 12 channels: 1.23x the multiply-adds, but four times the output channels a
runtime's GEMM is fed, and no 64-channel tensor at output resolution
(bench/README.md has the timings). The result is the same convolution, only
summed in another order (float32: within 1e-3 on the 0..255 scale).

Output pixel ``(r*i + a, r*j + b)`` of ``Conv(DepthToSpace_r(X), W)`` reads
input pixel ``r*i + a + dy - k//2`` of the shuffled tensor, which is channel
block ``(u, v)`` of ``X`` at ``i + floor((a + dy - k//2) / r)``. Gathering the
taps of ``W`` by ``(a, b, u, v)`` gives a kernel ``W'`` over ``X`` whose output
channel ``(a*r + b)*O + o`` is output pixel ``(a, b)`` of channel ``o``, which
is what ``DepthToSpace_r`` (DCR) puts back in place. Zero padding maps to zero
padding because the element-wise operations in between keep 0 at 0 (checked).

``cancel_transposes``: ``Transpose(q)`` of an element-wise ``Add``/``Sub``/``Mul``/``Div`` whose tensor inputs
all come through ``Transpose(p)``, ``q`` undoing ``p``, computes the operation on the untransposed tensors
(exact: the same numbers, in another layout). tf2onnx leaves such pairs around a Keras graph's NHWC operations
between NCHW convolutions (the bicubic skip's edge-normalizing division); OpenVINO ran each of those transposes
with its reference kernel (``unknown_f32``), about 7% of the shipped SRResNet's run in bfloat16 and int8 on an
AMX Xeon (bench/README.md).

:func:`rewrite` applies both.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # start-up: onnx is imported only where a graph is rewritten or read (not from a warm cache)
    import onnx

log = logging.getLogger(__name__)

ELEMENTWISE = {"Relu", "Neg", "Mul", "Add", "PRelu", "LeakyRelu"}
"""Operations that commute with a pixel shuffle when their constants are per channel (or scalars)."""
BINARY = {"Add", "Sub", "Mul", "Div"}
"""Element-wise operations :func:`cancel_transposes` moves a transpose pair through (scalar constants only)."""
REWRITE_VERSION = 2
"""Bumped whenever a rewrite changes what it makes: rewritten graphs in a compile cache of an older version are not
read back (``model.compile_cache``)."""
MAX_COST = 1.5
"""Rewrite only when the new convolution does at most this many times the multiply-adds of the old one."""


def _to_array(tensor: onnx.TensorProto) -> np.ndarray:
    from onnx import numpy_helper  # start-up: see the imports

    return numpy_helper.to_array(tensor)


def _from_array(arr: np.ndarray, name: str) -> onnx.TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(arr, name)


def subpixel_kernel(weight: np.ndarray, bias: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The kernel, bias and (low, high) padding of ``Conv(DepthToSpace_block(X))`` computed on ``X``.

    ``weight`` is ``(O, C, k, k)`` with odd ``k`` and symmetric ``k // 2`` padding; the result is
    ``(block^2 * O, block^2 * C, K, K)`` with ``K = low + 1 + high``, output channels in the order
    ``DepthToSpace`` (DCR) expects.
    """
    out_ch, in_ch, k, k2 = weight.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"need an odd square kernel, got {weight.shape}")
    half, r = k // 2, block
    low = -((-half) // r)  # ceil(half / r): taps above/left of the block
    high = (r - 1 + half) // r
    size = low + 1 + high
    new = np.zeros((r * r * out_ch, r * r * in_ch, size, size), np.float32)
    for a in range(r):
        for b in range(r):
            rows = slice((a * r + b) * out_ch, (a * r + b + 1) * out_ch)
            for u in range(r):
                for v in range(r):
                    cols = slice((u * r + v) * in_ch, (u * r + v + 1) * in_ch)
                    for ky in range(size):
                        dy = r * (ky - low) + u - a + half
                        if not 0 <= dy < k:
                            continue
                        for kx in range(size):
                            dx = r * (kx - low) + v - b + half
                            if 0 <= dx < k:
                                new[rows, cols, ky, kx] = weight[:, :, dy, dx]
    return new, np.tile(bias.astype(np.float32), r * r), low, high


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _symmetric_same(conv: onnx.NodeProto, k: int) -> bool:
    """Stride 1, dilation 1, one group, padding ``k // 2`` on every side."""
    if _attr(conv, "group", 1) != 1 or any(s != 1 for s in _attr(conv, "strides", [1, 1])):
        return False
    if any(d != 1 for d in _attr(conv, "dilations", [1, 1])):
        return False
    auto_pad = _attr(conv, "auto_pad", b"NOTSET")
    if auto_pad in (b"SAME_UPPER", b"SAME_LOWER"):
        return True  # odd kernel, stride 1: k // 2 on each side
    return auto_pad == b"NOTSET" and list(_attr(conv, "pads", [0, 0, 0, 0])) == [k // 2] * 4


def rewrite(proto: onnx.ModelProto) -> int:
    """Every rewrite of this module, in place: :func:`subpixel_tail`, then :func:`cancel_transposes`. Returns
    how many places changed (0 leaves ``proto`` as it was)."""
    return subpixel_tail(proto) + cancel_transposes(proto)


def _index(g: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """Each tensor's producing node, and the nodes reading it."""
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def cancel_transposes(proto: onnx.ModelProto) -> int:
    """Rewrite, in place, every ``Transpose(q)`` of element-wise nodes whose tensor inputs all come (through
    more such nodes, each read only there) from ``Transpose(p)`` with ``q`` undoing ``p`` (see the module);
    transposes left unread are removed.

    Returns the number of element-wise nodes moved (0 leaves ``proto`` as it was).
    """
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    done = 0
    while True:
        producer, consumers = _index(g)
        plan = None
        for outer in (n for n in g.node if n.op_type == "Transpose"):
            plan = _cancel_plan(outer, producer, consumers, inits, graph_outputs)
            if plan is not None:
                break
        if plan is None:
            break
        outer, ops, sources = plan
        for op in ops:
            for idx, name in enumerate(op.input):
                if name in sources:
                    op.input[idx] = sources[name]
        top = ops[0]
        stale = {op.output[0] for op in ops}  # their shapes are now the untransposed ones
        top.output[0] = outer.output[0]
        g.node.remove(outer)
        keep = [v for v in g.value_info if v.name not in stale]
        del g.value_info[:]
        g.value_info.extend(keep)
        done += len(ops)
        _, consumers = _index(g)
        for inner in {id(producer[name]): producer[name] for name in sources}.values():
            if not consumers.get(inner.output[0]) and inner.output[0] not in graph_outputs:
                g.node.remove(inner)
    if done:
        from onnx import checker

        checker.check_model(proto)
        log.info("%d element-wise operation(s) moved out of transpose pairs", done)
    return done


def _cancel_plan(outer: onnx.NodeProto, producer: dict[str, onnx.NodeProto],
                 consumers: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
                 graph_outputs: set[str]) -> tuple[onnx.NodeProto, list[onnx.NodeProto], dict[str, str]] | None:
    """``(outer, the element-wise nodes (the one ``outer`` reads first), {their inputs from a transpose: what that
    transpose reads})`` where ``outer`` undoes every such transpose; None where it does not apply."""
    q = list(_attr(outer, "perm", []))
    ops: list[onnx.NodeProto] = []
    sources: dict[str, str] = {}

    def collect(name: str, reader: onnx.NodeProto) -> bool:
        node = producer.get(name)
        if node is None or name in graph_outputs or consumers.get(name, []) != [reader]:
            return False
        if node.op_type == "Transpose":
            p = list(_attr(node, "perm", []))
            # Transpose(Transpose(x, p), q) has axis k = x's axis p[q[k]]: the identity when it gives every k back
            if not q or len(p) != len(q) or [p[q[k]] for k in range(len(q))] != list(range(len(q))):
                return False
            sources[name] = node.input[0]
            return True
        if node.op_type not in BINARY:
            return False
        ops.append(node)
        for i in node.input:
            if i in inits:
                if _to_array(inits[i]).size != 1:  # a per-axis constant would need transposing too
                    return False
            elif not collect(i, node):
                return False
        return True

    if producer.get(outer.input[0]) is None or producer[outer.input[0]].op_type not in BINARY:
        return None
    return (outer, ops, sources) if collect(outer.input[0], outer) and sources else None


def subpixel_tail(proto: onnx.ModelProto) -> int:
    """Rewrite, in place, every ``DepthToSpace -> element-wise -> Conv`` where it pays (see the module).

    Returns the number of convolutions rewritten (0 leaves ``proto`` as it was).
    """
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    producer, consumers = _index(g)
    graph_outputs = {o.name for o in g.output}
    done = 0
    for conv in [n for n in g.node if n.op_type == "Conv"]:
        plan = _plan(conv, inits, producer, consumers, graph_outputs)
        if plan is None:
            continue
        d2s, chain, block = plan
        _apply(g, conv, d2s, chain, block, inits)
        done += 1
        producer, consumers = _index(g)
    if done:
        used = {i for n in g.node for i in n.input}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        from onnx import checker

        checker.check_model(proto)
    return done


def _plan(conv: onnx.NodeProto, inits: dict[str, onnx.TensorProto], producer: dict[str, onnx.NodeProto],
          consumers: dict[str, list[onnx.NodeProto]],
          graph_outputs: set[str]) -> tuple[onnx.NodeProto, list[onnx.NodeProto], int] | None:
    """The shuffle feeding ``conv`` and the element-wise nodes between them, or None when it does not apply."""
    if len(conv.input) < 2 or conv.input[1] not in inits:
        return None
    weight = _to_array(inits[conv.input[1]])
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        return None
    if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
        return None
    out_ch, in_ch, k, _ = weight.shape
    if not _symmetric_same(conv, k):
        return None
    chain: list[onnx.NodeProto] = []
    d2s: onnx.NodeProto | None = None
    stack, seen = [conv.input[0]], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type == "DepthToSpace":
            if d2s is not None and d2s is not node:
                return None
            d2s = node
            continue
        if node.op_type not in ELEMENTWISE or not _keeps_zero(node, inits):
            return None
        chain.append(node)
        for i in node.input:
            if i in inits:
                if not _per_channel(_to_array(inits[i]), in_ch):
                    return None
            else:
                stack.append(i)
    if d2s is None or _attr(d2s, "mode", b"DCR") != b"DCR":
        return None
    # nothing else may read the shuffled tensor or the chain's intermediates
    inside = {id(n) for n in chain} | {id(conv)}
    for node in [d2s, *chain]:
        for out in node.output:
            if out in graph_outputs or any(id(c) not in inside for c in consumers.get(out, [])):
                return None
    block = int(_attr(d2s, "blocksize"))
    new_size = -((-(k // 2)) // block) + 1 + (block - 1 + k // 2) // block
    cost = (block**4 * out_ch * in_ch * new_size**2) / (block**2 * out_ch * in_ch * k * k)
    if cost > MAX_COST:
        return None
    return d2s, chain, block


def _per_channel(arr: np.ndarray, channels: int) -> bool:
    """A constant that broadcasts the same over every pixel: a scalar, ``(1, C, 1, 1)`` or ``(C, 1, 1)``."""
    if arr.size == 1:
        return True
    return arr.ndim <= 4 and (1,) * (4 - arr.ndim) + arr.shape == (1, channels, 1, 1)


def _keeps_zero(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """The operation maps an all-zero input to zero (so the convolution's zero padding commutes)."""
    if node.op_type == "Add":
        return all(i not in inits or not _to_array(inits[i]).any() for i in node.input)
    return True


def _apply(g: onnx.GraphProto, conv: onnx.NodeProto, d2s: onnx.NodeProto, chain: list[onnx.NodeProto], block: int,
           inits: dict[str, onnx.TensorProto]) -> None:
    weight = _to_array(inits[conv.input[1]])
    out_ch = weight.shape[0]
    bias = (_to_array(inits[conv.input[2]]) if len(conv.input) > 2 and conv.input[2]
            else np.zeros(out_ch, np.float32))
    new_w, new_b, low, high = subpixel_kernel(weight, bias, block)
    prefix = f"{conv.name or conv.output[0]}__subpixel"
    tiled_names: dict[str, str] = {}
    for node in chain:
        for idx, name in enumerate(node.input):
            if name == d2s.output[0]:
                node.input[idx] = d2s.input[0]
            elif name in inits:
                arr = _to_array(inits[name])
                if arr.size > 1:
                    arr = arr.reshape(1, -1, 1, 1)
                    if name not in tiled_names:
                        tiled_names[name] = f"{prefix}__{name}"
                        g.initializer.append(_from_array(np.tile(arr, (1, block * block, 1, 1)), tiled_names[name]))
                    node.input[idx] = tiled_names[name]
    data = conv.input[0] if conv.input[0] != d2s.output[0] else d2s.input[0]
    g.initializer.extend([_from_array(new_w, f"{prefix}__W"), _from_array(new_b, f"{prefix}__B")])
    from onnx import helper

    new_conv = helper.make_node("Conv", [data, f"{prefix}__W", f"{prefix}__B"], [f"{prefix}__out"], name=prefix,
                                kernel_shape=[new_w.shape[2], new_w.shape[3]], pads=[low, low, high, high])
    shuffle = helper.make_node("DepthToSpace", [f"{prefix}__out"], list(conv.output), name=f"{prefix}__shuffle",
                               blocksize=block, mode="DCR")
    # the chain's tensors now have block^2 times the channels: drop their recorded shapes
    stale = {o for n in [d2s, *chain] for o in n.output}
    keep = [v for v in g.value_info if v.name not in stale]
    del g.value_info[:]
    g.value_info.extend(keep)
    nodes = list(g.node)
    at = nodes.index(conv)
    nodes[at : at + 1] = [new_conv, shuffle]
    nodes.remove(d2s)
    del g.node[:]
    g.node.extend(nodes)
    log.info("%s: %dx%d convolution after a pixel shuffle of %d computed before it (%dx%d)", conv.name,
             weight.shape[2], weight.shape[3], block, new_w.shape[2], new_w.shape[3])


def flops_per_input_pixel(proto: onnx.ModelProto) -> float:
    """Multiply-adds x 2 of the graph's convolutions per input pixel: what a network costs, read off its graph
    (model cards: ``srgan import``, ``srgan export``; the candidates of ``srgan bench engine``).

    Each tensor's resolution relative to the input is followed through the graph: a pixel shuffle
    (``DepthToSpace``) or a ``Resize`` by constant scales multiplies it, a strided convolution divides it, so a
    convolution after an upsampling counts its factor squared, wherever the upsampled branch sits in the node
    order (a bicubic skip's shuffle, say).
    """
    g = proto.graph
    consts = {t.name: _to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = _to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:  # torch.onnx shares equal weights this way
            consts[node.output[0]] = consts[node.input[0]]
    factor = {i.name: 1.0 for i in g.input if i.name not in consts}
    total = 0.0
    for node in g.node:
        known = [factor[i] for i in node.input if i in factor]
        if not known:
            continue  # a constant subgraph
        f = max(known)
        if node.op_type == "DepthToSpace":
            f *= _attr(node, "blocksize")
        elif node.op_type in ("Resize", "Upsample"):
            scales = next((consts[i] for i in node.input[1:] if i in consts and consts[i].size == 4), None)
            if scales is not None and scales.dtype.kind == "f":
                f *= float(scales[2])  # NCHW's H (NHWC graphs transpose to NCHW before a Resize)
        elif node.op_type == "Conv":
            weight = consts.get(node.input[1])
            if weight is None:
                raise ValueError(f"convolution {node.name or node.output[0]}: its weight is not a constant")
            f /= _attr(node, "strides", [1, 1])[0]
            total += 2.0 * weight.size * f * f
        for out in node.output:
            factor[out] = f
    return total
