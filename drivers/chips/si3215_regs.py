"""Register map of the Si3210/Si3215 ProSLIC as the FXS driver programs it.

Names follow DAHDI's proslic.h and the datasheet's direct (DR) and indirect (IR) tables;
every value the bring-up writes carries its source. "(confirm on hardware)" marks bits no
public text confirms. The twin (drivers/sim/) never imports this file: where the two
disagree, one misread a source, and the tests show it. SPI: every byte is its own
chip-select frame, a control byte (bit 7 read, bits 6..0 the DR address) then one data byte.
Sources: DAHDI wctdm.c (__wctdm_setreg/__wctdm_getreg), wctdm24xxp/base.c; OAK pitdm.c;
Xorcom xpp init_card_1_30.
"""

# -- SPI control byte --
SPI_READ = 0x80  # wctdm.c __wctdm_getreg: reg | 0x80
SPI_ADDR_MASK = 0x7F

# -- direct registers (proslic.h names in comments) --
DR_SPI_MODE = 0  # SPI_MODE: bits 5..4 part number, bits 3..0 revision (wctdm.c proslic_insane)
DR_PCM_MODE = 1  # PCM_MODE: bit 7 reads 1 on an Si3215 (wctdm.c proslic_insane FLAG_3215)
DR_PCM_TX_LO = 2  # PCM_XMIT_START_COUNT_LSB, 1 PCLK cycle per LSB (Silicon Labs INIT_DR2)
DR_PCM_TX_HI = 3  # PCM_XMIT_START_COUNT_MSB
DR_PCM_RX_LO = 4  # PCM_RCV_START_COUNT_LSB
DR_PCM_RX_HI = 5  # PCM_RCV_START_COUNT_MSB
DR_LOOPBACK = 8  # AUDIO_LOOPBACK; reset value 0x02 (wctdm.c proslic_insane "insane (1)")
DR_AUDIO_GAIN = 9  # AUDIO_GAIN
DR_HYBRID = 11  # HYBRID; reset value 0x33 (wctdm.c proslic_insane "insane (3)")
DR_POWERDOWN1 = 14  # PWR_DOWN1: 0x10 powers the DC-DC converter down (wctdm.c powerleak_test)
DR_INT_STATUS1 = 18  # INTRPT_STATUS1: oscillator and ring-timer interrupts
DR_INT_STATUS2 = 19  # INTRPT_STATUS2: ring trip, loop closure, power alarms Q1..Q6
DR_INT_STATUS3 = 20  # INTRPT_STATUS3: DTMF, indirect access, common-mode calibration
DR_INT_ENABLE1 = 21  # INTRPT_MASK1
DR_INT_ENABLE2 = 22  # INTRPT_MASK2
DR_INT_ENABLE3 = 23  # INTRPT_MASK3
DR_IDA_LO = 28  # IDA_LO: indirect data, low byte
DR_IDA_HI = 29  # IDA_HI: indirect data, high byte
DR_IAA = 30  # IAA: indirect address; writing it starts the indirect access
DR_IAS = 31  # I_STATUS: nonzero while an indirect access is pending (wctdm.c __wait_access)
DR_RING_OSC_CTL = 34  # RING_OSC_CTL
DR_RING_ACTIVE_LO = 48  # RING_ON__LO: ring active timer, 125 us per LSB, 16 bits in 48/49
DR_RING_ACTIVE_HI = 49  # RING_ON_HI
DR_RING_INACTIVE_LO = 50  # RING_OFF_LO: ring inactive timer, 125 us per LSB, in 50/51
DR_RING_INACTIVE_HI = 51  # RING_OFF_HI
DR_RING_LCR_DEBOUNCE = 63  # loop closure debounce while ringing, 1.25 ms per LSB
DR_LINEFEED = 64  # LINE_STATE: bits 2..0 LF (written), bits 6..4 LFS (the state applied)
DR_BAT_FEED = 66  # BAT_FEED: battery feed control
DR_AUTO = 67  # AUTO_STATE: automatic/manual control
DR_HOOK_STATUS = 68  # LOOP_STAT: bit 0 LCR loop closure, bit 1 RTP ring trip (debounced)
DR_LCR_DEBOUNCE = 69  # LOOP_DEBOUCE: loop closure debounce interval, 1.25 ms per LSB
DR_RTP_DEBOUNCE = 70  # RT_DEBOUCE: ring trip debounce interval, 1.25 ms per LSB
DR_LOOP_I_LIMIT = 71  # LOOP_I_LIMIT: 20 mA + 3 mA per LSB (wctdm.c powerup_proslic)
DR_ON_HOOK_V = 72  # OFF_HOOK_V: on-hook (open circuit) line voltage, 1.5 V per LSB
DR_COMMON_V = 73  # COMMON_V: common mode voltage, -1.5 V per LSB
DR_VBATH = 74  # BAT_V_HI: high battery (ringing), -1.5 V per LSB
DR_VBATL = 75  # BAT_V_LO: low battery (off hook), -1.5 V per LSB
DR_LVS = 78  # LOOP_V_SENSE: bits 5..0 at 1.5 V per LSB, bit 6 reverse (confirm on hardware)
DR_LCS = 79  # LOOP_I_SENSE: bits 5..0 at 1.1 mA per LSB
DR_VTIP = 80  # TIP_V_SENSE: tip voltage to ground, magnitude, 0.376 V per LSB
DR_VRING = 81  # RING_V_SENSE: ring voltage to ground, magnitude, 0.376 V per LSB
DR_VBATS1 = 82  # BAT_V_HI_SENSE: battery, 0.376 V per LSB (wctdm.c "376 * vbat / 1000")
DR_VBATS2 = 83  # BAT_V_LO_SENSE
DR_IQ5 = 88  # IQ5: read as the ring-gain mismatch result in manual calibration
DR_IQ6 = 89  # IQ6: read as the tip-gain mismatch result in manual calibration
DR_DCDC_PERIOD = 92  # DCDC_PWM_OFF: DC-DC PWM period, 61.035 ns/LSB (Silicon Labs INIT_DR92)
DR_DCDC = 93  # DCDC: min off time, 61.035 ns/LSB (INIT_DR93); bit 7 runs its calibration
DR_CAL1 = 96  # CALIBR1: calibration control/status 1; the chip clears it when done
DR_CAL2 = 97  # CALIBR2: calibration control/status 2: which calibrations to run
DR_CAL_RING_GAIN = 98  # RING_GAIN_CAL
DR_CAL_TIP_GAIN = 99  # TIP_GAIN_CAL
DR_DCDC_PEAK_CAL = 107  # DC_PEAK_CAL: the DC-DC calibration result
DR_ENHANCE = 108  # enhancement enable ("Revision C optimization" in wctdm.c)

# -- reset values the sanity check expects (wctdm.c wctdm_proslic_insane) --
RESET_LOOPBACK = 0x02
RESET_HYBRID = 0x33
RESET_LINEFEED = 0x00
REV_MIN = 2  # wctdm.c proslic_insane: "ProSLIC 3210 version %d is too old" below 2

# -- DR0 / DR1 fields --
REV_MASK = 0x0F
PART_SHIFT, PART_MASK = 4, 0x30
PCM_MODE_SI3215 = 0x80  # wctdm.c proslic_insane: "if (getreg(1) & 0x80) ... FLAG_3215"
PCM_ENABLE = 0x20  # wctdm.c init_proslic: DR1 = 0x20 (A-law) / 0x28 (mu-law), both enabled
PCM_ULAW = 0x08  # wctdm.c init_proslic: 0x28 "U-Law 8-bit interface"
PCM_ALAW = 0x00  # wctdm.c init_proslic: 0x20 when alawoverride

# -- DR8 --
LOOPBACK_OFF = 0x00  # wctdm.c init_proslic "Clear digital loopback"
LOOPBACK_DIGITAL = 0x02  # wctdm.c init_proslic "#if 0 Enable loopback": DR8 = 0x2; it is also
# the reset value, "Loopbacks (digital loopback default)" in Silicon Labs' reference init
# (INIT_DR8) (confirm on hardware)

# -- DR14 --
PDDCDC = 0x10  # wctdm.c powerleak_test "Power down"; init_proslic "turn off the DC->DC"
POWER_UP = 0x00  # wctdm.c powerup_proslic "Disable powerdown"

# -- DR18: interrupt status 1 --
IRQ1_OSC1A, IRQ1_OSC1I, IRQ1_OSC2A, IRQ1_OSC2I = 0x01, 0x02, 0x04, 0x08
IRQ1_RINGTA, IRQ1_RINGTI = 0x10, 0x20  # ring active timer / inactive timer expired
# -- DR19: interrupt status 2 --
IRQ2_RTRIP = 0x01  # ring trip
IRQ2_LOOP = 0x02  # loop closure transition
IRQ2_PQ_SHIFT = 2  # bits 2..7: power alarm on transistor Q1..Q6 (24xxp PAQ_DEBUG: res &= ~0x3)
IRQ2_PQ_MASK = 0xFC
# -- DR20: interrupt status 3 --
IRQ3_DTMF, IRQ3_INDIRECT, IRQ3_CMCAL = 0x01, 0x02, 0x04
IRQ_CLEAR_ALL = 0xFF  # wctdm.c init_proslic: DR18..20 = 0xff "clear all interrupt"

# -- DR31 --
IAS_PENDING = 0x01  # IAS_BIT in proslic.h; wctdm.c __wait_access waits for the whole DR31 == 0

# -- DR34: ringing oscillator control --
RING_OSC_EN = 0x04  # oscillator enabled (the chip sets it while the linefeed rings)
RING_TI_EN = 0x08  # inactive timer enable (confirm on hardware)
RING_TA_EN = 0x10  # active timer enable (confirm on hardware); 0x18 = both, as SLIC.c's RINGCON

# -- DR64 linefeed states (LF and LFS), proslic.h SLIC_LF_* --
LF_OPEN = 0
LF_FORWARD_ACTIVE = 1
LF_FORWARD_OHT = 2  # on-hook transmission: audio path up while on hook (caller ID)
LF_TIP_OPEN = 3
LF_RINGING = 4
LF_REVERSE_ACTIVE = 5
LF_REVERSE_OHT = 6
LF_RING_OPEN = 7
LF_MASK = 0x07  # SLIC_LF_SETMASK
LFS_SHIFT = 4

# -- DR66 / DR67: battery feed and automatic control --
BAT_FEED_Q7_OFF = 0x01  # wctdm.c init_proslic "Turn off Q7": DR66 = 1
AUTO_AOPN = 0x01  # power alarm opens the linefeed (xpp init_card_1_30: "Cancel AOPN" 0x1F -> 0x16)
AUTO_ABAT = 0x08  # automatic battery switching (xpp "Cancel ABAT"; wctdm.c clears it: 0x07)
AUTO_SAFE = 0x07  # wctdm.c init_proslic "Disable automatic VBat switching ... Q7": DR67 = 0x07
AUTO_RESET = 0x1F  # the chip's reset value (xpp init_card_1_30 "defaults but ...")
# bits 1 and 2 (kept set by DAHDI's 0x07): loop-closure and ring-trip automatic control
# in Silicon Labs' naming (confirm on hardware); bit 4 DAHDI clears too ("change this to
# 0x17" if pulse dialling has trouble at high REN loads)

# -- DR68 --
HOOK_LCR = 0x01
HOOK_RTP = 0x02

# -- DR92 / DR93 / DR107: DC-DC converter (wctdm.c powerup_proslic and init_proslic) --
DCDC_CAL = 0x80  # wctdm.c init_proslic "Perform DC-DC calibration": DR93 = 0x99 = 0x19 | 0x80
DCDC_PEAK_MIN, DCDC_PEAK_MAX = 0x02, 0x0D  # wctdm.c: outside -> "surprising direct 107"
DCDC_PEAK_FALLBACK = 0x08  # wctdm.c init_proslic: DR107 = 0x8 then

# -- DR96 / DR97: calibration (wctdm.c proslic_calibrate / proslic_manual_calibrate) --
CAL_RUN = 0x40  # set by the host to start, cleared by the chip when calibration is done
CAL_ALL = 0x1F  # DR97: "Perform all calibrations"
CAL_AUTO_START = 0x5F  # DR96: "Begin, no speedup"
CAL_MANUAL_DR97 = 0x18  # "Calibrations without the ADC and DAC offset and without common mode"
CAL_MANUAL_DR96 = 0x47  # "Calibrate common mode and differential DAC mode DAC + ILIM"
CAL_GAIN_RESET = 0x10  # DR98/99 start value "necessary if the calibration occurs other than at reset"
CAL_GAIN_TOP = 0x1F  # manual gain search runs DR98/99 from 0x1F down to 1
CAL_LONG_DR97 = 0x01  # "a singular calibration bit for longitudinal calibration"
CAL_LONG_IRQ3 = 0x04  # DR23: "enable interrupt for the balance Cal"
CAL_REGS = 12  # NUM_CAL_REGS: DR96..107 saved after calibration

# -- power-up thresholds (DR82 counts) --
VBAT_POWERED = 0xC0  # wctdm.c powerup_proslic: wait for DR82 >= 0xc0 (about 72 V)
VBAT_LEAK_MIN = 0x06  # wctdm.c powerleak_test: below 0x06 after power-down is a leak

# -- scalings --
TIMER_TICK_S = 125e-6  # ring timers
DEBOUNCE_TICK_MS = 1.25  # DR63/69/70
ILIM_BASE_MA, ILIM_STEP_MA = 20.0, 3.0  # DR71: wctdm.c "lim = (loopcurrent - 20) / 3"
VOC_STEP_V = 1.5  # DR72..75
LVS_STEP_V = 1.5  # DR78
LVS_REVERSE = 0x40  # DR78 sign: tip more negative than ring (confirm on hardware)
LCS_STEP_MA = 1.1  # DR79
VSENSE_STEP_V = 0.376  # DR80..83 (wctdm.c "376 * vbat / 1000")

# -- indirect registers (Si3210 addresses; the Si3215 ones come from IR_TABLE) --
IR_RING_OFFSET = 19  # RING_V_OFF
IR_RING_FREQ = 20  # RING_OSC (RCO): ring oscillator frequency coefficient
IR_RING_AMP = 21  # RING_X (RNGX): ring oscillator amplitude
IR_RING_INIT = 22  # RING_Y: ring oscillator initial phase
IR_LCR_THRESH = 28  # LOOP_CLOSE_TRES
IR_RTP_THRESH = 29  # RING_TRIP_TRES
IR_PQ12_THRESH, IR_PQ34_THRESH, IR_PQ56_THRESH = 32, 33, 34  # PWR_ALARM_Q1Q2..Q5Q6
IR_LCR_FILTER = 35  # LOOP_CLOSURE_FILTER
IR_RTP_FILTER = 36  # RING_TRIP_FILTER
IR_FILTERS = (35, 36, 37, 38, 39)  # wctdm.c init_proslic: flushed around calibration
IR_FILTER_FLUSH = 0x8000  # "Flush ProSLIC digital filters by setting to clear"
IR_SCRATCH = 97  # wctdm.c init_proslic "Clear scratch pad area"
IR_MANUAL_CAL = (88, 89, 90, 91, 92, 93)  # wctdm.c manual_calibrate: cleared before the search
SI3215_NONE = 255  # translate_3215: the Si3215 has no such register

# (Si3210 address, Si3215 address or 255, name, initial value): DAHDI's indirect_regs[]
# table, wctdm.c and OAK pitdm.c (identical); written whole by
# wctdm_proslic_init_indirect_regs and read back by wctdm_proslic_verify_indirect_regs.
IR_TABLE: tuple[tuple[int, int, str, int], ...] = (
    (0, 255, "DTMF_ROW_0_PEAK", 0x55C2),
    (1, 255, "DTMF_ROW_1_PEAK", 0x51E6),
    (2, 255, "DTMF_ROW2_PEAK", 0x4B85),
    (3, 255, "DTMF_ROW3_PEAK", 0x4937),
    (4, 255, "DTMF_COL1_PEAK", 0x3333),
    (5, 255, "DTMF_FWD_TWIST", 0x0202),
    (6, 255, "DTMF_RVS_TWIST", 0x0202),
    (7, 255, "DTMF_ROW_RATIO_TRES", 0x0198),
    (8, 255, "DTMF_COL_RATIO_TRES", 0x0198),
    (9, 255, "DTMF_ROW_2ND_ARM", 0x0611),
    (10, 255, "DTMF_COL_2ND_ARM", 0x0202),
    (11, 255, "DTMF_PWR_MIN_TRES", 0x00E5),
    (12, 255, "DTMF_OT_LIM_TRES", 0x0A1C),
    (13, 0, "OSC1_COEF", 0x7B30),
    (14, 1, "OSC1X", 0x0063),
    (15, 2, "OSC1Y", 0x0000),
    (16, 3, "OSC2_COEF", 0x7870),
    (17, 4, "OSC2X", 0x007D),
    (18, 5, "OSC2Y", 0x0000),
    (19, 6, "RING_V_OFF", 0x0000),
    (20, 7, "RING_OSC", 0x7EF0),
    (21, 8, "RING_X", 0x0160),
    (22, 9, "RING_Y", 0x0000),
    (23, 255, "PULSE_ENVEL", 0x2000),
    (24, 255, "PULSE_X", 0x2000),
    (25, 255, "PULSE_Y", 0x0000),
    (26, 13, "RECV_DIGITAL_GAIN", 0x2000),  # "playback volume set lower"; the driver loads 0x4000 (0 dB): si3215.py RECV_DIGITAL_GAIN_0DB
    (27, 14, "XMIT_DIGITAL_GAIN", 0x4000),
    (28, 15, "LOOP_CLOSE_TRES", 0x1000),
    (29, 16, "RING_TRIP_TRES", 0x3600),
    (30, 17, "COMMON_MIN_TRES", 0x1000),
    (31, 18, "COMMON_MAX_TRES", 0x0200),
    (32, 19, "PWR_ALARM_Q1Q2", 0x07C0),
    (33, 20, "PWR_ALARM_Q3Q4", 0x2600),  # wctdm24xxp base.c raised it to 0x4C00
    (34, 21, "PWR_ALARM_Q5Q6", 0x1B80),
    (35, 22, "LOOP_CLOSURE_FILTER", 0x8000),
    (36, 23, "RING_TRIP_FILTER", 0x0320),
    (37, 24, "TERM_LP_POLE_Q1Q2", 0x008C),
    (38, 25, "TERM_LP_POLE_Q3Q4", 0x0100),
    (39, 26, "TERM_LP_POLE_Q5Q6", 0x0010),
    (40, 27, "CM_BIAS_RINGING", 0x0C00),
    (41, 64, "DCDC_MIN_V", 0x0C00),
    (42, 255, "DCDC_XTRA", 0x1000),
    (43, 66, "LOOP_CLOSE_TRES_LOW", 0x1000),
)
IR_NAMES = {addr: name for addr, _alt, name, _v in IR_TABLE}
SI3215_ADDRESS = {addr: alt for addr, alt, _name, _v in IR_TABLE}

# -- ring generator (wctdm.c wctdm_init_ring_generator_mode / set_ring_generator_mode(0)) --
RING_RCO_DEFAULT = 0x7EF0  # reg20 "Default"
RING_RNGX_DEFAULT = 0x0160  # reg21 "Normal ring power"
RING_VBATH = 0x32  # reg74 "Default"
RING_TRIP_THRESH = 0x3600  # IR29 "RPTP"
NEON_TIMERS = ((48, 0xE0), (49, 0x01), (50, 0xF0), (51, 0x05))  # "neon trapezoid timers"
RING_OSC_RATE = 1000.0  # the ring oscillator's coefficients are defined at 1 kHz
RING_AMP_FULL_V = 96.0  # RNGX full scale, peak volts
