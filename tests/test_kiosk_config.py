"""[kiosk] and [[kiosks]]: defaults, cross-field checks, errors by key path (issue 5)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.config import ConfigError, parse_config


def config(**sections: Any) -> Any:
    return parse_config({"agent": {"store_id": "s1"}, **sections})


def problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(**sections)
    return info.value.problems


def test_defaults() -> None:
    cfg = config()
    assert cfg.kiosk.fulfilments == ["counter", "till"]
    assert cfg.kiosk.checkout_url_template is None
    assert cfg.kiosks == []


def test_a_kiosk_with_a_serial_scanner() -> None:
    cfg = config(
        kiosk={"fulfilments": ["phone", "locker"],
               "checkout_url_template": "https://shop.example.cn/checkout?store={store_id}&order={order_id}"},
        kiosks=[{"id": "k1", "name": "Entrance", "lang": "en", "orientation": "landscape",
                 "scanner_url": "/dev/ttyACM0"}],
    )
    assert cfg.kiosks[0].scanner_baudrate == 9600
    assert cfg.kiosk.fulfilments == ["phone", "locker"]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"kiosk": {"fulfilments": ["phone"]}}, "kiosk: the phone fulfilment needs checkout_url_template"),
        ({"kiosk": {"fulfilments": ["till", "till"]}}, "kiosk.fulfilments: each fulfilment once: till repeated"),
        ({"kiosk": {"fulfilments": ["cash"]}}, "kiosk.fulfilments.0"),
        ({"kiosk": {"fulfilments": []}}, "kiosk.fulfilments"),
        ({"kiosk": {"checkout_url_template": "http://shop/{order_id}"}}, "kiosk.checkout_url_template"),
        ({"kiosk": {"checkout_url_template": "https://shop/{cart}"}}, "kiosk.checkout_url_template"),
        ({"kiosks": [{"id": "k 1", "name": "x"}]}, "kiosks.0.id"),
        ({"kiosks": [{"id": "k1", "name": "x", "lang": "fr"}]}, "kiosks.0.lang"),
        ({"kiosks": [{"id": "k1", "name": "x", "colour": "red"}]}, "kiosks.0.colour: unknown key"),
        ({"kiosks": [{"id": "k1", "name": "a"}, {"id": "k1", "name": "b"}]}, "kiosks: ids must be unique"),
        ({"kiosks": [{"id": "k1", "name": "a", "scanner_url": "/dev/ttyACM0"},
                     {"id": "k2", "name": "b", "scanner_url": "/dev/ttyACM0"}]}, "shared: /dev/ttyACM0"),
    ],
)
def test_bad_kiosk_config_names_the_key(sections: dict[str, Any], expected: str) -> None:
    found = problems(**sections)
    assert any(expected in p for p in found), found
