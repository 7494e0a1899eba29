"""The rabbitmqctl commands the harness and the tests use, without an Erlang VM each time.

`rabbitmqctl` starts an Erlang VM for every command: about a second, and most of a second of CPU, for each
queue count or cluster status the tests ask for (a run of the suite asked hundreds of times). `erl_call`, the
small C client of Erlang's distribution that ships with Erlang, has the running node evaluate the same code
in a few milliseconds. ``code()`` turns the few commands asked often (eval, stop_app, start_app,
list_queues of some columns) into that code, printing what rabbitmqctl prints; the callers send any other
command, or one that erl_call could not take to the node (no erl_call, another cookie), to rabbitmqctl.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

ERL_CALL = Path("/usr/lib/erlang/bin/erl_call")  # Debian's and Ubuntu's Erlang
DONE = "{ok, ok}"  # erl_call's answer, after what the code printed, when the code ran to its end

# Columns of `rabbitmqctl list_queues` that the code below prints as rabbitmqctl does (names, numbers, atoms).
QUEUE_COLUMNS = frozenset({"name", "messages_ready", "messages_unacknowledged", "messages", "consumers", "durable",
                           "type", "leader"})

# A value as rabbitmqctl prints it in a list: a resource by its name, a binary or an atom as text.
_TEXT = ('F = fun({resource, _, _, N}) -> N; (V) when is_binary(V) -> V; (V) when is_atom(V) -> atom_to_binary(V); '
         '(V) when is_integer(V) -> integer_to_binary(V); (V) -> iolist_to_binary(io_lib:format("~p", [V])) end')


def code(args: Sequence[str]) -> str | None:
    """Erlang code that does what ``rabbitmqctl ARGS`` does and prints what it prints, for these commands:
    ``eval EXPR``, ``stop_app``, ``start_app``, ``list_queues -q --no-table-headers [-p VHOST] COLUMN...`` (of
    QUEUE_COLUMNS); None for any other. The code ends with ``ok``, and fails (a badmatch) where rabbitmqctl
    would exit non-zero."""
    command, *rest = args or [""]
    if command == "eval" and len(rest) == 1:
        expression = rest[0].strip().removesuffix(".")
        return f'io:format("~p~n", [begin {expression} end]), ok.'
    if command == "stop_app" and not rest:
        # Not before the node's boot has returned (its marker, the process rabbit_boot, gone): stopped between
        # "Server startup complete" and that, the boot finds no reason for the stop, fails, and the Erlang VM
        # exits (seen on 4.3.6 when stop_app came at once after the node took connections; rabbitmqctl
        # stop_app does the same). Waits up to 60 s.
        return ("Booted = fun Booted(0) -> ok; Booted(N) -> case whereis(rabbit_boot) of undefined -> ok; "
                "_ -> timer:sleep(50), Booted(N - 1) end end, Booted(1200), ok = rabbit:stop(), ok.")
    if command == "start_app" and not rest:
        # rabbit:start() a moment after rabbit:stop() may find the last boot's marker still there and return ok
        # at once, starting nothing (seen on 3.10): asked again until the node runs, for up to 10 s.
        return ("Start = fun Start(0) -> not_running; Start(N) -> ok = rabbit:start(), case rabbit:is_running() of "
                "true -> ok; false -> timer:sleep(100), Start(N - 1) end end, ok = Start(100), ok.")
    if command == "list_queues" and {"-q", "--no-table-headers"} <= set(rest):
        words = [word for word in rest if word not in ("-q", "--no-table-headers")]
        vhost = "/"
        if words[:1] == ["-p"] and len(words) >= 2:
            vhost, words = words[1], words[2:]
        if not words or not set(words) <= QUEUE_COLUMNS or '"' in vhost or "\\" in vhost:
            return None
        # As rabbitmqctl does: each running node lists the queues it leads (a quorum queue's counts are
        # known on its leader's node; elsewhere they read 0).
        return (f"{_TEXT}, Local = fun() -> [rabbit_amqqueue:info(Q, [{', '.join(words)}]) || "
                f"Q <- rabbit_amqqueue:list_local(<<\"{vhost}\"/utf8>>)] end, "
                "Rows = lists:append([case rpc:call(N, erlang, apply, [Local, []], 60000) of L when is_list(L) -> L; "
                "_ -> [] end || N <- rabbit_nodes:all_running()]), "
                "[io:format(\"~ts~n\", [lists:join(\"\\t\", [F(V) || {_, V} <- Info])]) || Info <- Rows], ok.")
    return None


def options(cookie: str | None, timeout: float) -> list[str]:
    """erl_call's options but the node's name: evaluate what comes on stdin, and print its output."""
    return [*(["-c", cookie] if cookie else []), "-r", "-timeout", str(max(1, round(timeout))), "-e", "-fetch_stdout"]


def printed(answer: str, what: str) -> str:
    """What the code printed, from erl_call's answer; RuntimeError where the code failed (its error term)."""
    if not answer.endswith(DONE):
        raise RuntimeError(f"{what} failed on the node: {answer.strip()[-2000:]}")
    return answer.removesuffix(DONE)


def call(command: list[str], erlang: str, what: str, timeout: float) -> str | None:
    """Run an erl_call ``command`` with ``erlang`` on its stdin: what the code printed; None where erl_call
    could not run or reach the node (the caller then uses rabbitmqctl); RuntimeError where the code failed."""
    try:
        result = subprocess.run(command, input=erlang + "\n", capture_output=True, text=True, timeout=timeout + 10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return printed(result.stdout, what)


def local(nodename: str, cookie: str | None, args: Sequence[str], timeout: float = 120) -> str | None:
    """``rabbitmqctl ARGS`` for a node on this machine, through erl_call; None where it is not one of the
    commands ``code()`` knows, or erl_call is missing or could not reach the node."""
    erlang = code(args)
    if erlang is None or not ERL_CALL.exists():
        return None
    command = [str(ERL_CALL), "-sname", nodename, *options(cookie, timeout)]
    return call(command, erlang, f"rabbitmqctl {args[0]}", timeout)


# In a container of RabbitMQ's image: its Erlang's erl_call, beside `erl` (Debian's /usr/lib/erlang/bin, the
# official image's /usr/local/lib/erlang/bin); exit 127 where there is none. The node name is passed as $1,
# or is rabbit@ the container's host name.
IN_CONTAINER = ('e="$(dirname "$(readlink -f "$(command -v erl)")")/erl_call"; [ -x "$e" ] || exit 127; '
                'n="${1:-rabbit@$(cat /etc/hostname)}"; shift; exec "$e" -sname "$n" "$@"')


def in_container(prefix: list[str], nodename: str, cookie: str | None, args: Sequence[str],
                 timeout: float = 120) -> str | None:
    """``rabbitmqctl ARGS`` in a container, through erl_call there: ``prefix`` is the command that runs a
    program in it as the rabbitmq user with stdin open (``docker exec -i -u rabbitmq NAME``); ``nodename``
    empty for rabbit@ its host name; ``cookie`` None for the rabbitmq user's own. None as for ``local``."""
    erlang = code(args)
    if erlang is None or not shutil.which(prefix[0]):
        return None
    command = [*prefix, "sh", "-c", IN_CONTAINER, "erl", nodename, *options(cookie, timeout)]
    return call(command, erlang, f"rabbitmqctl {args[0]}", timeout)


MACHINE_COOKIE = Path("/var/lib/rabbitmq/.erlang.cookie")  # the rabbitmq user's, where Debian's package runs it


def machine(args: Sequence[str], timeout: float = 120) -> str | None:
    """``rabbitmqctl ARGS`` for this machine's own broker (rabbit@ this host's short name, as rabbitmqctl
    finds it by default), through erl_call with the cookie of the rabbitmq user (readable by root) or else
    this user's own. None as for ``local``: the caller then runs rabbitmqctl."""
    try:
        cookie: str | None = MACHINE_COOKIE.read_text().strip()
    except OSError:
        cookie = None
    return local(f"rabbit@{socket.gethostname().split('.')[0]}", cookie, args, timeout)
