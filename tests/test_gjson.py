"""The GJSON subset used for Katib's success and failure conditions."""

from __future__ import annotations

import pytest

from katibx.defaults import WORKER_DEFAULTS
from katibx.workers._gjson import MISSING, GJSONSyntaxError, check, condition_match, get

JOB_COMPLETE = {
    "status": {
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
        ],
        "succeeded": 1,
    }
}
JOB_RUNNING = {"status": {"active": 1}}
JOB_FAILED = {"status": {"conditions": [
    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
]}}
FRIENDS = {"friends": [
    {"first": "Dale", "age": 44, "nets": ["ig", "fb", "tw"]},
    {"first": "Roger", "age": 68, "nets": ["fb", "tw"]},
    {"first": "Jane", "age": 47, "nets": ["ig", "tw"]},
]}


@pytest.mark.parametrize("path, expected", [
    ("friends.#", 3),
    ("friends.1.first", "Roger"),
    ("friends.#.first", ["Dale", "Roger", "Jane"]),
    ('friends.#(first=="Jane").age', 47),
    ("friends.#(age>45)#.first", ["Roger", "Jane"]),
    ("friends.#(age>=44)#|#", 3),
    ('friends.#(first%"D*").first', "Dale"),
    ('friends.#(first!%"D*")#.first', ["Roger", "Jane"]),
    ('friends.#(nets.#(=="fb"))#.first', ["Dale", "Roger"]),
    ('friends.#(first!="Dale")#.age', [68, 47]),
    ('friends.#(age<45)#.first', ["Dale"]),
    ('friends.#(first=="Nobody")', MISSING),
    ('friends.#(first=="Nobody")#', []),
    ("friends.#(first)#|#", 3),
    ("friends.9", MISSING),
    ("friends.first", MISSING),
    ("nothing.here", MISSING),
    ("[friends.0.first,friends.1.age,missing]", ["Dale", 68]),
    ("friends.0.@this.first", "Dale"),
])
def test_paths(path: str, expected: object) -> None:
    assert get(FRIENDS, path) == expected


def test_pipe_differs_from_dot_after_a_query() -> None:
    data = {"a": [{"b": [1]}, {"b": [2]}]}
    assert get(data, "a.#(b)#.0") == []  # dot maps the rest over elements: each element's key "0"
    assert get(data, "a.#(b)#|0") == {"b": [1]}  # pipe applies it to the array of matches


def test_escaped_keys() -> None:
    data = {"metadata": {"labels": {"katib.kubeflow.org/trial": "t1"}}}
    assert get(data, r"metadata.labels.katib\.kubeflow\.org/trial") == "t1"


@pytest.mark.parametrize("kind", list(WORKER_DEFAULTS))
def test_katib_defaults(kind: str) -> None:
    success, failure, _ = WORKER_DEFAULTS[kind]
    complete = {"status": {"conditions": [{"type": "Created", "status": "True"},
                                          {"type": "Succeeded", "status": "True", "reason": "Done"},
                                          {"type": "Complete", "status": "True", "reason": "Done"}]}}
    assert condition_match(complete, success) == {"type": success.split('"')[1], "status": "True", "reason": "Done"}
    assert condition_match(complete, failure) is None
    assert condition_match(JOB_RUNNING, success) is None and condition_match(JOB_RUNNING, failure) is None
    assert condition_match(JOB_FAILED, failure)["reason"] == "BackoffLimitExceeded"
    assert condition_match(JOB_FAILED, success) is None


def test_condition_status_false_does_not_match() -> None:
    job = {"status": {"conditions": [{"type": "Complete", "status": "False"}]}}
    assert condition_match(job, WORKER_DEFAULTS["Job"][0]) is None
    assert condition_match(JOB_COMPLETE, WORKER_DEFAULTS["Job"][0])["message"].startswith("Reached")


def test_argo_and_tekton_conditions() -> None:
    # examples/argo/argo-workflow.yaml and examples/tekton/pipeline-run.yaml
    success, failure = 'status.[@this].#(phase=="Succeeded")#', 'status.[@this].#(phase=="Failed")#'
    assert condition_match({"status": {"phase": "Succeeded"}}, success) == {"phase": "Succeeded"}
    assert condition_match({"status": {"phase": "Running"}}, success) is None
    assert condition_match({"status": {"phase": "Failed"}}, failure) == {"phase": "Failed"}
    assert condition_match({}, failure) is None
    tekton_failure = 'status.conditions.#(type=="Succeeded")#|#(status=="False")#'
    run = {"status": {"conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed"}]}}
    assert condition_match(run, tekton_failure)["reason"] == "Failed"


def test_number_and_type_comparisons() -> None:
    data = {"xs": [{"v": 1}, {"v": "1"}, {"v": True}, {"v": None}]}
    assert get(data, "xs.#(v==1)#") == [{"v": 1}]
    assert get(data, 'xs.#(v=="1")#') == [{"v": "1"}]
    assert get(data, "xs.#(v==true)#") == [{"v": True}]
    assert get(data, "xs.#(v==null)#") == [{"v": None}]
    assert get(data, "xs.#(v>0)#") == [{"v": 1}]


@pytest.mark.parametrize("path", [
    "status.@reverse", "status.*.x", "{a,b}", "a.#(b==", 'a.#(b==unquoted)', "a..b", "", "a.#(b=={})",
])
def test_unsupported_or_malformed(path: str) -> None:
    with pytest.raises(GJSONSyntaxError):
        check(path)


@pytest.mark.parametrize("path", [
    'status.conditions.#(type=="Complete")#|#(status=="True")#', 'status.[@this].#(phase=="Succeeded")#',
    "status.succeeded", "status.conditions.0.type", 'a.#(b.#(=="x"))#.c',
])
def test_supported(path: str) -> None:
    check(path)
