"""Arithmetic for the agent, evaluated from the syntax tree: numbers, operators and a few math
functions only. Nothing else in an expression (names, attributes, calls of other functions,
comprehensions...) is accepted, so a prompt cannot run code through it."""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION_CHARS = 300
# Results with more digits than this are refused (2**10**9 would take the server down).
MAX_RESULT_DIGITS = 10_000

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": math.factorial,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
# What people type for operators that Python spells differently.
_REPLACEMENTS = {"^": "**", "×": "*", "÷": "/", "（": "(", "）": ")", "，": ","}


class CalculatorError(ValueError):
    pass


def calculate(expression: str) -> str:
    """Evaluate ``expression`` and return the result as text."""
    text = (expression or "").strip().strip("`").strip()
    for written, python in _REPLACEMENTS.items():
        text = text.replace(written, python)
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}")
    try:
        return _format(_evaluate(tree.body))
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise CalculatorError(f"cannot evaluate {expression!r}: {exc}")


def _evaluate(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise CalculatorError("keyword arguments are not supported")
        arguments = [_evaluate(argument) for argument in node.args]
        if node.func.id == "factorial" and arguments and abs(arguments[0]) > 3000:
            raise CalculatorError("factorial argument too large")
        return _FUNCTIONS[node.func.id](*arguments)
    raise CalculatorError(f"unsupported element in expression: {ast.dump(node)[:60]}")


def _check_power(base, exponent) -> None:
    if base in (0, 1, -1) or exponent <= 0:
        return
    digits = abs(exponent) * math.log10(abs(base)) if base else 0
    if digits > MAX_RESULT_DIGITS:
        raise CalculatorError(f"result would have more than {MAX_RESULT_DIGITS} digits")


def _format(value) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".12g")
    return str(value)
