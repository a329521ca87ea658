"""The console's command grammar: a tree of keywords and `<arguments>` with `?` help, TAB
completion and unique-prefix abbreviations (`sh st` = `show status`). Argument choices
come from callables so they follow the live config; a `rest=True` argument takes the rest
of the line; "..." quotes a value with spaces. Errors are ParseError with one line:
`% unknown command "shw": did you mean "show"?`."""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[Any, dict[str, str]], None]

CR = "<cr>"


class ParseError(Exception):
    """The line does not fit the grammar; the message is the one line to print."""


@dataclass
class Node:
    word: str = ""  # keyword; "" for an argument node
    help: str = ""
    arg: str = ""  # argument name, e.g. "seconds"
    run: Handler | None = None  # handler(ctx, args) when the line may end here
    children: list[Node] = field(default_factory=list)
    choices: Callable[[Any, dict], list[tuple[str, str]]] | None = None  # [(word, help)]
    describe: Callable[[Any, dict], str] | None = None  # the argument's help, live
    complete: Callable[[Any, str], list[str]] | None = None  # whole-token completions
    rest: bool = False  # the argument takes the rest of the line
    check: Callable[[Any, str], str] | None = None  # (ctx, word) -> a problem, "" when fine

    def add(self, *nodes: Node) -> Node:
        self.children.extend(nodes)
        return self

    @property
    def label(self) -> str:
        return self.word or f"<{self.arg}>"

    def keywords(self) -> list[Node]:
        return [c for c in self.children if c.word]

    def argument(self) -> Node | None:
        return next((c for c in self.children if not c.word), None)


def kw(word: str, help: str, run: Handler | None = None, *children: Node) -> Node:
    return Node(word=word, help=help, run=run, children=list(children))


def arg(name: str, help: str, run: Handler | None = None, *children: Node,
        **kw_: Any) -> Node:
    return Node(arg=name, help=help, run=run, children=list(children), **kw_)


@dataclass
class Parsed:
    node: Node
    args: dict[str, str]
    words: list[str]  # the full keywords taken, for messages and the audit log


def split(text: str) -> tuple[list[str], str]:
    """Complete words and the word being typed ("" after a space)."""
    words = _tokens(text)
    if not text or text[-1] == " " or not words:
        return words, ""
    return words[:-1], words[-1]


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an open quote: take the rest as it stands
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split = True
        words = []
        try:
            for word in lexer:
                words.append(word)
        except ValueError:
            words.append(text[text.rfind('"') + 1:])
        return words


def _match(node: Node, word: str, ctx: Any) -> Node:
    """The child a typed word selects; ParseError when none or several do."""
    keys = node.keywords()
    exact = [c for c in keys if c.word == word]
    if exact:
        return exact[0]
    hits = [c for c in keys if c.word.startswith(word)]
    if len(hits) == 1:
        return hits[0]
    argument = node.argument()
    if argument is not None:
        return argument
    if hits:
        names = ", ".join(c.word for c in hits)
        raise ParseError(f'% ambiguous command "{word}": could be {names}')
    raise ParseError(_unknown(word, [c.word for c in keys]))


def _unknown(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
    hint = f'did you mean "{close[0]}"?' if close else "type ? to list the commands"
    return f'% unknown command "{word}": {hint}'


def walk(root: Node, words: list[str], ctx: Any) -> tuple[Node, dict[str, str], list[str]]:
    """Follow complete words from the root: the node reached, the arguments, the keywords."""
    node, args, taken = root, {}, []
    for i, word in enumerate(words):
        node = child = _match(node, word, ctx)
        if child.word:
            taken.append(child.word)
        elif child.rest:
            args[child.arg] = " ".join(words[i:])
            break
        else:
            _check_arg(child, word, ctx)
            args[child.arg] = word
    return node, args, taken


def _check_arg(node: Node, word: str, ctx: Any) -> None:
    problem = node.check(ctx, word) if node.check else ""
    if problem:
        raise ParseError(f"% {node.label}: {problem}")


def parse(root: Node, text: str, ctx: Any) -> Parsed | None:
    """The command of a whole line (None for an empty line)."""
    words = _tokens(text)
    if not words:
        return None
    node, args, taken = walk(root, words, ctx)
    if node.run is None:
        nexts = " | ".join(c.label for c in node.children) or "more"
        raise ParseError(f'% incomplete command "{" ".join(words)}": add {nexts} (type ? for help)')
    return Parsed(node, args, taken)


# --- ? help and TAB completion -------------------------------------------------------

def _options(node: Node, partial: str, ctx: Any, args: dict) -> list[tuple[str, str]]:
    """(word, help) of what may come next, filtered by the partial word."""
    out = [(c.word, c.help) for c in node.keywords() if c.word.startswith(partial)]
    argument = node.argument()
    if argument is not None:
        listed = argument.choices(ctx, args) if argument.choices else []
        out += [(w, h) for w, h in listed if w.startswith(partial)]
        if not listed:
            out.append((argument.label, _arg_help(argument, ctx, args)))
    if node.run is not None and not partial:
        out.append((CR, "run it"))
    return out


def help_lines(root: Node, text: str, ctx: Any) -> list[str]:
    """What `?` shows after the text typed so far."""
    words, partial = split(text)
    try:
        node, args, _taken = walk(root, words, ctx)
    except ParseError as exc:
        return [str(exc)]
    if node.rest and not node.word and words:
        return [f"  {node.label:<20} {_arg_help(node, ctx, args)}", f"  {CR:<20} run it"]
    options = _options(node, partial, ctx, args)
    if not options:
        return [f'% nothing matches "{partial}"' if partial else "% no more words here"]
    width = max(len(w) for w, _h in options) + 2
    return [f"  {w:<{max(width, 20)}} {h}".rstrip() for w, h in options]


def complete(root: Node, text: str, ctx: Any) -> tuple[str, list[str]]:
    """TAB: (the new text, choices to show when ambiguous)."""
    words, partial = split(text)
    try:
        node, args, _taken = walk(root, words, ctx)
    except ParseError:
        return text, []
    if node.rest and not node.word and words:
        return text, []
    candidates = _candidates(node, partial, ctx, args)
    head = text[:len(text) - len(partial)]
    if len(candidates) == 1:
        word = candidates[0]
        return head + word + ("" if word.endswith(".") else " "), []
    if not candidates:
        return text, []
    common = os.path.commonprefix(candidates)
    if len(common) > len(partial):
        return head + common, []
    return text, _columns(candidates)


def _arg_help(node: Node, ctx: Any, args: dict) -> str:
    return node.describe(ctx, args) if node.describe else node.help


def _candidates(node: Node, partial: str, ctx: Any, args: dict) -> list[str]:
    words = [c.word for c in node.keywords() if c.word.startswith(partial)]
    argument = node.argument()
    if argument is not None and argument.complete:
        words += argument.complete(ctx, partial)
    elif argument is not None and argument.choices:
        words += [w for w, _h in argument.choices(ctx, args) if w.startswith(partial)]
    return sorted(set(words), key=words.index)


def _columns(words: list[str], width: int = 78) -> list[str]:
    size = max(len(w) for w in words) + 2
    per = max(1, width // size)
    return ["  " + "".join(f"{w:<{size}}" for w in words[i:i + per]).rstrip()
            for i in range(0, len(words), per)]
