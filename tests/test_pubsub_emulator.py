"""The emulator fixture itself: it starts, carries messages, and stops without leftovers."""

from __future__ import annotations

import os
import socket

import pytest

from localstack.emulator import EmulatorUnavailable, PubSubEmulator, find_emulator_launcher


def test_publish_and_pull_through_the_emulator(
    emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import pubsub_v1

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(emulator.project, "selfcheck")
    sub = subscriber.subscription_path(emulator.project, "selfcheck-sub")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    publisher.publish(topic, b"hello", kind="greeting").result(timeout=10)
    resp = subscriber.pull(request={"subscription": sub, "max_messages": 1}, timeout=10)
    [received] = resp.received_messages
    assert (received.message.data, received.message.attributes["kind"]) == (b"hello", "greeting")
    subscriber.acknowledge(request={"subscription": sub, "ack_ids": [received.ack_id]})
    subscriber.close()


def test_stop_leaves_nothing_running() -> None:
    emu = PubSubEmulator().start()
    pgid = emu._proc.pid if emu._proc else 0
    emu.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", emu.port))


def test_missing_launcher_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_BIN", "/nonexistent/cloud-pubsub-emulator")
    with pytest.raises(EmulatorUnavailable) as err:
        find_emulator_launcher()
    assert "pubsub-emulator" in str(err.value) and "install" in str(err.value)
