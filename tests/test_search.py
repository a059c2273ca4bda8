"""The search endpoint: the parameter_filter grammar, tags, dates and sorting, in SQL on both
databases."""

from __future__ import annotations

import pytest

from airavata_hpc.search import FilterError, parse_filter

from support import assert_error, experiment_body


def sets(*values):
    return [{"id": f"s{i}", "values": v} for i, v in enumerate(values)]


@pytest.fixture
def corpus(alice):
    """Four experiments with distinct parameter sets; returns name -> id."""
    made = {
        "low": sets({"alpha": "0.1", "mode": "fast"}, {"alpha": "0.2", "mode": "slow"}),
        "high": sets({"alpha": "0.9", "mode": "fast"}, {"alpha": "10", "mode": "slow"}),
        "text": sets({"alpha": "abc", "mode": "fast"}),
        "mixed": sets({"alpha": "0.7", "mode": "slow"}, {"alpha": "0.3", "mode": "fast"}),
    }
    ids = {}
    for name, parameter_sets in made.items():
        body = experiment_body(
            name=name,
            command_template="run {{ alpha }} {{ mode }}",
            parameters=parameter_sets,
            metadata={"tags": ["t-" + name, "all"] + (["pair"] if name in ("low", "high") else [])},
        )
        response = alice.post("/experiments", json=body)
        assert response.status_code == 201
        ids[name] = response.json()["id"]
    return ids


def names(alice, **params):
    response = alice.get("/experiments/search", params=params)
    assert response.status_code == 200, response.text
    return {e["name"] for e in response.json()["experiments"]}


def test_numeric_comparison_when_both_sides_are_numbers(alice, corpus):
    # "abc" is not a number, so it is compared as text: "abc" > "0.5".
    assert names(alice, parameter_filter="alpha>0.5") == {"high", "mixed", "text"}
    assert names(alice, parameter_filter="alpha>0.5,alpha<100") == {"high", "mixed"}
    # 10 > 9 numerically although "10" < "9" as text.
    assert names(alice, parameter_filter="alpha>=9,alpha<=10") == {"high"}
    assert names(alice, parameter_filter="alpha=0.10") == {"low"}


def test_text_comparison_otherwise(alice, corpus):
    assert names(alice, parameter_filter="mode=slow") == {"low", "high", "mixed"}
    assert names(alice, parameter_filter="alpha=abc") == {"text"}
    assert names(alice, parameter_filter="mode!=fast") == {"low", "high", "mixed"}


def test_all_clauses_must_hold_in_one_parameter_set(alice, corpus):
    # "mixed" has alpha>0.5 only in its slow set and fast only with alpha 0.3.
    assert names(alice, parameter_filter="alpha>0.5,alpha<99,mode=fast") == {"high"}
    assert names(alice, parameter_filter="alpha>0.5 AND mode=slow") == {"high", "mixed"}
    assert names(alice, parameter_filter="alpha<0.25 and mode='fast'") == {"low"}


def test_tags_must_all_be_present(alice, corpus):
    assert names(alice, tags="all") == set(corpus)
    assert names(alice, tags="pair,t-low") == {"low"}
    assert names(alice, tags="t-low,t-high") == set()


def test_sorting_dates_and_paging(alice, corpus):
    response = alice.get("/experiments/search", params={"sort_by": "name", "order": "asc"})
    assert [e["name"] for e in response.json()["experiments"]] == ["high", "low", "mixed", "text"]
    first = alice.get(f"/experiments/{corpus['low']}").json()["created_at"]
    assert "low" not in names(alice, created_after="2999-01-01T00:00:00Z")
    assert "low" in names(alice, created_before="2999-01-01T00:00:00Z", created_after=first)
    page = alice.get(
        "/experiments/search", params={"limit": 1, "offset": 3, "sort_by": "name"}
    ).json()
    assert page["total"] == 4 and len(page["experiments"]) == 1


def test_search_is_scoped_to_the_owner(bob, corpus):
    assert names(bob, parameter_filter="alpha>0") == set()


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sort_by": "owner"}, "sort_by"),
        ({"order": "up"}, "order"),
        ({"limit": 1000}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"parameter_filter": "alpha>>1"}, "parameter_filter"),
    ],
)
def test_bad_arguments_are_400_naming_the_argument(alice, params, field):
    body = assert_error(alice.get("/experiments/search", params=params), 400)
    assert body["details"]["field"] == field


def test_malformed_filter_points_at_the_clause(alice):
    body = assert_error(
        alice.get("/experiments/search", params={"parameter_filter": "alpha>1, beta~2"}), 400
    )
    assert body["details"]["clause"] == "beta~2"
    assert body["details"]["position"] == 10
    assert "beta~2" in body["message"]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty clause"),
        ("alpha>1,", "empty clause"),
        ("9alpha=1", "parameter name"),
        ("alpha", "expected one of"),
        ("alpha=", "missing value"),
        ("alpha='x", "unterminated quote"),
        ("alpha=a b", "quote a value"),
        ("alpha>>1", "unexpected operator"),
    ],
)
def test_grammar_errors(text, problem):
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert problem in caught.value.message


def test_grammar_accepts_quotes_and_separators():
    clauses = parse_filter("a<=1 AND b='x, y' , c != \"q r\"")
    assert [(c.name, c.op, c.value) for c in clauses] == [
        ("a", "<=", "1"),
        ("b", "=", "x, y"),
        ("c", "!=", "q r"),
    ]
