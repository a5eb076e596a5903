from mp2amp.errors import (
    AuthError,
    ConfigError,
    ContractError,
    RateLimited,
    Rejection,
    ServerError,
    TerminalError,
    TransientError,
    classify_http,
    parse_retry_after,
)


def test_classify_http_kinds() -> None:
    assert classify_http(200, service="Amplitude") is None
    assert isinstance(classify_http(429, service="Amplitude", retry_after=3), RateLimited)
    err = classify_http(503, service="Amplitude")
    assert isinstance(err, ServerError) and isinstance(err, TransientError) and err.status == 503
    assert isinstance(classify_http(401, service="Mixpanel"), AuthError)
    assert isinstance(classify_http(400, service="Mixpanel", body="bad"), ContractError)
    assert isinstance(classify_http(400, service="x"), TerminalError)


def test_config_error_lists_every_problem() -> None:
    err = ConfigError(["a is missing", "b must be a number"], source="mp2amp.toml")
    text = str(err)
    assert "mp2amp.toml" in text and "a is missing" in text and "b must be a number" in text
    assert err.exit_code == 2


def test_rejection_describe_names_file_line_field() -> None:
    rej = Rejection("missing_id", "no usable distinct_id", field="properties.distinct_id")
    text = rej.located("day1.jsonl", 7).describe()
    assert text.startswith("day1.jsonl:7: missing_id (field properties.distinct_id)")


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015") is None  # not a whole HTTP date
    # an HTTP date (what proxies send) counts from now; one past is "now"
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412510.0) == 0.0
    for endless in ("inf", "1e999", "nan", "Infinity"):  # would wait forever
        assert parse_retry_after(endless) is None
    assert parse_retry_after("-1") is None
