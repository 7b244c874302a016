"""Wire models: both state vocabularies, tolerance of unknown fields, outputs and cost."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from runcomfy_async import (
    CancelOutcome,
    JobState,
    MalformedResponseError,
    Result,
    Status,
)
from runcomfy_async._models import (
    SubmitResponse,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submit,
)

RID = "3f2b6c1e-9a7d-4e1f-8b2a-0c9d8e7f6a5b"
VIDEO = "https://storage.example.com/outputs/a.mp4"


# -- JobState -------------------------------------------------------------------------

STATUS_ROUTE_WORDS = {  # the status route's documented words, then RunComfy clients' extras
    "in_queue": JobState.QUEUED,
    "in_progress": JobState.RUNNING,
    "completed": JobState.SUCCEEDED,
    "cancelled": JobState.CANCELLED,
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
}
RESULT_ROUTE_WORDS = {
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "in_queue": JobState.QUEUED,
    "in_progress": JobState.RUNNING,
    "cancelled": JobState.CANCELLED,
}


@pytest.mark.parametrize(("word", "state"), sorted(STATUS_ROUTE_WORDS.items()))
def test_status_route_vocabulary_maps_onto_job_state(word: str, state: JobState) -> None:
    assert parse_status({"request_id": RID, "status": word}, RID).state is state


@pytest.mark.parametrize(("word", "state"), sorted(RESULT_ROUTE_WORDS.items()))
def test_result_route_vocabulary_maps_onto_job_state(word: str, state: JobState) -> None:
    assert parse_result({"request_id": RID, "status": word}, RID).status is state


def test_state_words_are_read_case_and_space_insensitively() -> None:
    assert JobState.parse(" Completed ") is JobState.SUCCEEDED


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("pending", JobState.QUEUED),
        ("waiting", JobState.QUEUED),
        ("starting", JobState.RUNNING),
        ("processing", JobState.RUNNING),
    ],
)
def test_words_runcomfys_own_clients_meet_are_not_finished_and_not_warned(
    word: str, state: JobState, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runcomfy_async"):
        status = parse_status({"request_id": RID, "status": word}, RID)
    assert status.state is state
    assert not status.state.is_terminal
    assert not [r for r in caplog.records if "unknown job state" in r.getMessage()]


@pytest.mark.parametrize("word", ["exploded", "", 42, None, ["in_queue"]])
def test_unknown_state_is_unknown_and_logged(word: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runcomfy_async"):
        status = parse_status({"request_id": RID, "status": word}, RID)
    assert status.state is JobState.UNKNOWN
    assert not status.state.is_terminal  # not finished: keep polling
    assert any(
        r.levelno == logging.WARNING and "unknown job state" in r.getMessage()
        for r in caplog.records
    )


def test_only_succeeded_failed_and_cancelled_are_terminal() -> None:
    terminal = {s for s in JobState if s.is_terminal}
    assert terminal == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


# -- submit and status ------------------------------------------------------------------


def test_submit_answer_is_read_and_kept_whole() -> None:
    body = {
        "request_id": RID,
        "status_url": f"https://api/v1/requests/{RID}/status",
        "result_url": f"https://api/v1/requests/{RID}/result",
        "cancel_url": f"https://api/v1/requests/{RID}/cancel",
        "eta_seconds": 90,  # unknown field: kept in raw
    }
    answer = parse_submit(body)
    assert isinstance(answer, SubmitResponse)
    assert answer.request_id == RID
    assert answer.cancel_url == body["cancel_url"]
    assert answer.raw["eta_seconds"] == 90


@pytest.mark.parametrize("body", [{}, {"request_id": ""}, {"request_id": 7}, {"status_url": "x"}])
def test_submit_answer_without_a_request_id_is_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponseError):
        parse_submit(body)


@pytest.mark.parametrize("body", [[RID], "ok", 42, None])
def test_non_object_bodies_are_malformed(body: Any) -> None:
    with pytest.raises(MalformedResponseError) as info:
        parse_submit(body)
    assert info.value.status_code == 200
    for parse in (parse_status, parse_result, parse_cancel):
        with pytest.raises(MalformedResponseError):
            parse(body, RID)


def test_status_keeps_queue_position_and_unknown_fields() -> None:
    status = parse_status(
        {"request_id": RID, "status": "in_queue", "queue_position": 3, "region": "us"}, RID
    )
    assert status == Status(RID, JobState.QUEUED, 3)
    assert status.raw["region"] == "us"


@pytest.mark.parametrize("position", ["soon", True, [1], {"n": 1}, float("inf"), float("nan")])
def test_a_bad_queue_position_does_not_fail_the_check(position: Any) -> None:
    status = parse_status(
        {"request_id": RID, "status": "in_queue", "queue_position": position}, RID
    )
    assert status.queue_position is None and status.state is JobState.QUEUED


def test_status_without_status_field_is_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        parse_status({"request_id": RID}, RID)


def test_an_answer_without_request_id_is_about_the_request_we_asked_for() -> None:
    assert parse_status({"status": "in_progress"}, RID).request_id == RID


# -- result ---------------------------------------------------------------------------


def test_finished_result_keeps_outputs_extra_keys_and_unknown_fields() -> None:
    body = {
        "request_id": RID,
        "status": "succeeded",
        "output": {"video": VIDEO, "thumbnail": "https://s/t.jpg", "seed": 1234},
        "created_at": "2026-11-01T10:00:00Z",
        "finished_at": "2026-11-01T10:01:30Z",
        "gpu": "h100",
    }
    result = parse_result(body, RID)
    assert result.done and result.status is JobState.SUCCEEDED
    assert result.video == VIDEO
    assert result.output["thumbnail"] == "https://s/t.jpg" and result.output["seed"] == 1234
    assert result.raw["gpu"] == "h100"
    assert result.created_at == "2026-11-01T10:00:00Z"
    assert result.finished_at == "2026-11-01T10:01:30Z"


def test_unfinished_result_is_its_current_state() -> None:
    result = parse_result({"request_id": RID, "status": "in_progress"}, RID)
    assert not result.done and result.output == {} and result.video is None


@pytest.mark.parametrize(
    "error",
    [
        {"code": "generation_failed", "message": "boom"},
        "content policy",
        ["a", "b"],
        42,
    ],
)
def test_failed_result_keeps_the_error_payload_as_sent(error: Any) -> None:
    result = parse_result({"request_id": RID, "status": "failed", "error": error}, RID)
    assert result.status is JobState.FAILED and result.error == error


def test_result_with_outputs_but_no_status_is_a_success() -> None:
    assert parse_result({"output": {"video": VIDEO}}, RID).status is JobState.SUCCEEDED


def test_result_with_neither_status_nor_output_is_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        parse_result({"request_id": RID, "foo": 1}, RID)


@pytest.mark.parametrize(
    ("output", "video", "videos", "image", "images"),
    [
        ({"video": VIDEO}, VIDEO, [VIDEO], None, []),
        ({"videos": ["https://s/1.mp4", "https://s/2.mp4"]}, None,
         ["https://s/1.mp4", "https://s/2.mp4"], None, []),
        ({"image": "https://s/i.png"}, None, [], "https://s/i.png", ["https://s/i.png"]),
        ({"images": ["https://s/1.png", 7, ""]}, None, [], None, ["https://s/1.png"]),
        ({"video": 7, "image": ""}, None, [], None, []),
        ({}, None, [], None, []),
    ],
)  # fmt: skip
def test_output_accessors(
    output: dict[str, Any],
    video: str | None,
    videos: list[str],
    image: str | None,
    images: list[str],
) -> None:
    result = Result(RID, JobState.SUCCEEDED, output=output)
    assert (result.video, result.videos, result.image, result.images) == (
        video,
        videos,
        image,
        images,
    )


def test_urls_lists_every_output_once_videos_first() -> None:
    output = {
        "image": "https://s/cover.png",
        "videos": ["https://s/1.mp4", "https://s/2.mp4", "https://s/1.mp4"],
        "images": ["https://s/cover.png", "https://s/still.png"],
    }
    result = Result(RID, JobState.SUCCEEDED, output=output)
    assert result.urls == [
        "https://s/1.mp4",
        "https://s/2.mp4",
        "https://s/cover.png",
        "https://s/still.png",
    ]


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (0.84, 0.84),
        (1, 1.0),
        ("0.42", 0.42),
        (None, None),
        ("n/a", None),
        (True, None),
        (10**400, None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_cost_is_read_in_usd_or_left_out(cost: Any, expected: float | None) -> None:
    body = {"request_id": RID, "status": "succeeded", "output": {"video": VIDEO}, "cost": cost}
    assert parse_result(body, RID).cost == expected


def test_cost_absent_is_none() -> None:
    assert parse_result({"request_id": RID, "status": "succeeded"}, RID).cost is None


def test_result_renders_the_clip_in_a_notebook() -> None:
    html = Result(RID, JobState.SUCCEEDED, output={"video": VIDEO})._repr_html_()
    assert "<video" in html and VIDEO in html


# -- cancel ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "cancelled"),
    [("cancelled", True), ("canceled", True), ("not_cancellable", False)],
)
def test_cancel_outcome(outcome: str, cancelled: bool) -> None:
    answer = parse_cancel({"request_id": RID, "status": "in_queue", "outcome": outcome}, RID)
    assert isinstance(answer, CancelOutcome) and answer.cancelled is cancelled


@pytest.mark.parametrize(
    ("status", "cancelled"), [("cancelled", True), ("in_progress", False), ("completed", False)]
)
def test_cancel_outcome_is_inferred_from_the_state_when_missing(
    status: str, cancelled: bool
) -> None:
    assert parse_cancel({"request_id": RID, "status": status}, RID).cancelled is cancelled
