"""Objectives written as text (`flowam-fast explain --objective "channel('feat.act3') + 10 * flow()"`):
parsed as a Python expression over the term functions, numbers and + - * /, and nothing else
(no names, attributes or calls beyond the terms), so a command line cannot run code."""
from __future__ import annotations

import ast

from . import terms

#: The functions an expression may call.
FUNCTIONS = {"logit": terms.logit, "channel": terms.channel, "neuron": terms.neuron, "flow": terms.flow,
             "continuity": terms.continuity, "diversity": terms.diversity}


def parse_objective(text: str, flows=None) -> terms.Objective:
    """The objective a text names.

    Args:
        text: An expression such as `"logit() + 100 * flow() + continuity()"`; arguments are
            literals (strings, numbers, lists of strings), by position or by name.
        flows: The `Flows` a `flow()` without flows reads (else the engine's).

    Returns:
        The objective.

    Raises:
        ValueError: Text that is not such an expression; the message says what is not allowed.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"objective {text!r} is not an expression: {exc.msg}") from None
    value = _evaluate(tree.body, text, flows)
    if not isinstance(value, (terms.Objective, terms.Term)):
        raise ValueError(f"objective {text!r} is a number, not an objective: use terms such as logit() or "
                         "channel('layer')")
    return terms._objective(value, "use")


def _evaluate(node, text, flows):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _evaluate(node.operand, text, flows)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _evaluate(node.left, text, flows), _evaluate(node.right, text, flows)
        try:
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            return a / b
        except TypeError as exc:
            raise ValueError(f"objective {text!r}: {exc}") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        args = [_literal(a, text) for a in node.args]
        kwargs = {k.arg: _literal(k.value, text) for k in node.keywords if k.arg}
        if len(kwargs) != len(node.keywords):
            raise ValueError(f"objective {text!r}: ** arguments are not allowed")
        if node.func.id == "flow" and flows is not None and not args and "flows" not in kwargs:
            kwargs["flows"] = flows
        try:
            return FUNCTIONS[node.func.id](*args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"objective {text!r}: {node.func.id}(): {exc}") from None
    what = ast.get_source_segment(text.strip(), node) or type(node).__name__
    raise ValueError(f"objective {text!r}: {what!r} is not allowed; an objective adds and scales the terms "
                     f"{', '.join(f'{n}()' for n in FUNCTIONS)} by numbers")


def _literal(node, text):
    try:
        return ast.literal_eval(node)
    except ValueError:
        what = ast.get_source_segment(text.strip(), node) or type(node).__name__
        raise ValueError(f"objective {text!r}: argument {what!r} is not a literal (a string, number or list)") \
            from None
