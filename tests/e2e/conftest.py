import pytest

from harness import Tern


@pytest.fixture
def tern(tmp_path):
    broker = Tern(tmp_path / "tern").start()
    yield broker
    broker.kill()


@pytest.fixture
def tern_factory(tmp_path):
    started = []

    def make(config: str = "", name: str = "tern", start: bool = True) -> Tern:
        broker = Tern(tmp_path / name, config=config, name=name)
        started.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in started:
        broker.kill()
