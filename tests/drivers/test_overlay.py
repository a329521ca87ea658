"""The card's device-tree overlay compiles and says what the config and the drivers assume.

Compiles image/overlays/branchline-card-overlay.dts with dtc (`-@`, as the Raspberry Pi
firmware's overlays are built) and reads the compiled tree back with fdtget: SPI0 with
three chip-selects (spidev0.2 exists for the DAA, CE2 on the GPIO the config rules
reserve), the reset and interrupt GPIOs of the default chips, and the PCM link as a
sound card in DSP mode B, two 16-bit slots (the 32-bit frame of drivers/bus/tdm.py), the
Pi as clock master with a continuous clock. Assumes dtc and fdtget on the PATH
(device-tree-compiler, installed by scripts/test from scripts/debian-test-packages.txt).
"""

import subprocess
from pathlib import Path

import pytest

from drivers.bus import tdm
from drivers.bus.spi import SPI_HINT
from firmware.core.config import default_document
from firmware.core.config.rules import MAX_CS, OVERLAY_CS2_GPIO, PCM_PINS, SPI_PINS

OVERLAY = Path(__file__).resolve().parents[2] / "image" / "overlays" / "branchline-card-overlay.dts"
LINK = "/fragment@7/__overlay__/simple-audio-card,dai-link@{}"
ACTIVE_LOW = 1  # GPIO_ACTIVE_LOW: a chip-select is low while selected


@pytest.fixture(scope="module")
def dtbo(tmp_path_factory):
    out = tmp_path_factory.mktemp("overlay") / "branchline-card.dtbo"
    done = subprocess.run(["dtc", "-@", "-I", "dts", "-O", "dtb", "-o", str(out), str(OVERLAY)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    return out


def fdtget(dtbo: Path, node: str, prop: str, kind: str = "") -> str:
    args = ["fdtget"] + (["-t", kind] if kind else []) + [str(dtbo), node, prop]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{node} {prop}: {done.stderr}"
    return done.stdout.strip()


def ints(dtbo: Path, node: str, prop: str) -> list[int]:
    return [int(v) for v in fdtget(dtbo, node, prop, "u").split()]


def fixups(dtbo: Path, label: str) -> str:
    return fdtget(dtbo, "/__fixups__", label)


def default_chips() -> dict:
    return default_document()["board"]["chips"]


def test_spi0_gets_three_chip_selects_with_cs2_where_the_config_rules_put_it(dtbo):
    assert "/fragment@0:target:0" in fixups(dtbo, "spi0_cs_pins")
    assert ints(dtbo, "/fragment@0/__overlay__", "brcm,pins") == [8, 7, OVERLAY_CS2_GPIO]
    assert list(SPI_PINS[0]["CE"]) == [8, 7, OVERLAY_CS2_GPIO] and MAX_CS[0] == 2
    assert "/fragment@2:target:0" in fixups(dtbo, "spi0")
    cells = ints(dtbo, "/fragment@2/__overlay__", "cs-gpios")  # <&gpio pin flags> x 3
    assert [(cells[i + 1], cells[i + 2]) for i in range(0, len(cells), 3)] == [
        (8, ACTIVE_LOW), (7, ACTIVE_LOW), (OVERLAY_CS2_GPIO, ACTIVE_LOW)]
    assert fdtget(dtbo, "/fragment@2/__overlay__", "status") == "okay"


def test_every_default_chip_select_has_a_spidev_node(dtbo):
    spidev2 = "/fragment@2/__overlay__/spidev@2"
    assert fdtget(dtbo, spidev2, "compatible") == "spidev"
    assert ints(dtbo, spidev2, "reg") == [2]
    assert "/fragment@3:target:0" in fixups(dtbo, "spidev0")  # the Pi's own CE0/CE1 nodes
    assert "/fragment@4:target:0" in fixups(dtbo, "spidev1")
    for frag in ("fragment@3", "fragment@4"):
        assert fdtget(dtbo, f"/{frag}/__overlay__", "status") == "okay"
    assert {c["spi_cs"] for c in default_chips().values() if c["spi_bus"] == 0} == {0, 1, 2}
    assert "spidev0.0-0.2" in SPI_HINT and "branchline-card" in SPI_HINT


def test_reset_and_interrupt_pins_are_the_default_chips_gpios(dtbo):
    chips = list(default_chips().values())
    resets = "/fragment@1/__overlay__/branchline_reset_pins"
    irqs = "/fragment@1/__overlay__/branchline_int_pins"
    assert ints(dtbo, resets, "brcm,pins") == [c["reset_gpio"] for c in chips]
    assert ints(dtbo, resets, "brcm,function") == [1]  # output
    assert ints(dtbo, irqs, "brcm,pins") == [c["int_gpio"] for c in chips]
    assert ints(dtbo, irqs, "brcm,function") == [0]  # input
    assert ints(dtbo, irqs, "brcm,pull") == [2]  # pull-up: open-drain INT
    # both groups are applied with SPI0, i.e. before the core opens any device
    pinctrl = ints(dtbo, "/fragment@2/__overlay__", "pinctrl-0")
    for group in (resets, irqs):
        assert ints(dtbo, group, "phandle")[0] in pinctrl


def test_pcm_pins_are_the_ones_the_config_rules_reserve(dtbo):
    pcm = "/fragment@1/__overlay__/branchline_pcm_pins"
    assert ints(dtbo, pcm, "brcm,pins") == sorted(PCM_PINS)
    assert ints(dtbo, pcm, "brcm,function") == [4]  # ALT0: PCM_CLK/FS/DIN/DOUT
    assert "/fragment@5:target:0" in fixups(dtbo, "i2s_clk_producer")
    assert ints(dtbo, "/fragment@5/__overlay__", "pinctrl-0") == ints(dtbo, pcm, "phandle")
    assert fdtget(dtbo, "/fragment@5/__overlay__", "status") == "okay"


def test_the_sound_card_is_dsp_b_two_16_bit_slots_pi_master_continuous(dtbo):
    assert "/fragment@7:target:0" in fixups(dtbo, "sound")
    card = "/fragment@7/__overlay__"
    assert fdtget(dtbo, card, "compatible") == "simple-audio-card"
    assert fdtget(dtbo, card, "simple-audio-card,name") == "branchline"
    codecs = {}
    for n in (0, 1):
        link = LINK.format(n)
        assert fdtget(dtbo, link, "format") == "dsp_b"
        assert fdtget(dtbo, link, "continuous-clock") == ""  # present (a flag)
        cpu = ints(dtbo, f"{link}/cpu", "phandle")
        assert ints(dtbo, link, "bitclock-master") == cpu == ints(dtbo, link, "frame-master")
        slots = ints(dtbo, f"{link}/cpu", "dai-tdm-slot-num")[0]
        width = ints(dtbo, f"{link}/cpu", "dai-tdm-slot-width")[0]
        assert (slots, width) == (tdm.ALSA_CHANNELS, tdm.CHANNEL_BITS)
        assert slots * width == tdm.FRAME_BITS  # 32 bit clocks a frame: 256 kHz at 8 kHz
        codecs[n] = ints(dtbo, f"{link}/codec", "sound-dai")[0]
    cpu_dai = fixups(dtbo, "i2s_clk_producer")
    assert all(f"{LINK.format(n)}/cpu:sound-dai:0" in cpu_dai for n in (0, 1))
    rx = ints(dtbo, "/fragment@6/__overlay__/branchline-pcm-rx", "phandle")[0]
    tx = ints(dtbo, "/fragment@6/__overlay__/branchline-pcm-tx", "phandle")[0]
    assert codecs == {0: rx, 1: tx}  # capture through the receiver, playback the transmitter
    assert fdtget(dtbo, "/fragment@6/__overlay__/branchline-pcm-rx", "compatible") == "linux,spdif-dir"
    assert fdtget(dtbo, "/fragment@6/__overlay__/branchline-pcm-tx", "compatible") == "linux,spdif-dit"


def test_overrides_move_cs2_and_hand_the_clock_to_the_card(dtbo):
    overrides = subprocess.run(["fdtget", "-p", str(dtbo), "/__overrides__"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert set(overrides) == {"cs2_pin", "card_master"}
    assert tdm.DEFAULT_CLOCK_MASTER == "pi" and "card" in tdm.CLOCK_MASTERS


def test_the_lifeline_relay_pin_is_an_output_held_low_until_the_core_feeds_it(dtbo):
    relay = "/fragment@1/__overlay__/branchline_relay_pin"
    assert ints(dtbo, relay, "brcm,pins") == [default_document()["board"]["lifeline"]["gpio"]]
    assert ints(dtbo, relay, "brcm,function") == [1]  # output
    assert ints(dtbo, relay, "brcm,pull") == [1]  # pull-down: released while the Pi boots
    assert ints(dtbo, relay, "phandle")[0] in ints(dtbo, "/fragment@2/__overlay__", "pinctrl-0")
