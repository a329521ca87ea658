"""Register map of the Si3210/Si3215 ProSLIC, shared by the driver and its emulator.

Names follow the Si3210/Si3215 datasheet's direct-register (DR) and indirect-register
(IR) tables; the numbers and scalings were read from the datasheet and from public
drivers that program the chip (DAHDI's wctdm). Bit positions marked "(twin)" could not
be confirmed from public text: the driver and the emulator agree on them, and they are
the first thing to check with a logic analyser at hardware bring-up.

SPI framing: every byte is its own chip-select frame. A control byte (bit 7 = read,
bits 6..0 = direct register address) is followed by one data byte; on a read the chip
shifts the register out during the data frame.
"""

# -- SPI control byte --
SPI_READ = 0x80
SPI_ADDR_MASK = 0x7F

# -- direct registers --
DR_SPI_MODE = 0  # SPI mode select; bits 5..4 part number, bits 3..0 chip revision
DR_PCM_MODE = 1  # PCM mode select; bit 7 reads 1 on an Si3215 (as DAHDI detects it)
DR_LOOPBACK = 8  # reset value 0x02: read back as a sanity check after reset
DR_HYBRID = 11  # transhybrid balance; reset value 0x33: second sanity check
DR_POWERDOWN1 = 14  # bit 4 PDDCDC: DC-DC converter powered down (reset value 0x10)
DR_INT_STATUS1 = 18  # oscillator and ring-timer interrupts
DR_INT_STATUS2 = 19  # ring trip, loop closure, power alarms Q1..Q6
DR_INT_STATUS3 = 20  # DTMF, indirect access, common-mode calibration
DR_INT_ENABLE1 = 21
DR_INT_ENABLE2 = 22
DR_INT_ENABLE3 = 23
DR_IDA_LO = 28  # indirect data access, low byte
DR_IDA_HI = 29  # indirect data access, high byte
DR_IAA = 30  # indirect address: writing it starts the indirect access
DR_IAS = 31  # indirect access status; bit 0 set while an access is pending
DR_RING_OSC_CTL = 34  # ringing oscillator control
DR_RING_ACTIVE_LO = 48  # ring active (on) timer, 125 us per LSB, 16 bits in 48/49
DR_RING_ACTIVE_HI = 49
DR_RING_INACTIVE_LO = 50  # ring inactive (off) timer, 125 us per LSB, in 50/51
DR_RING_INACTIVE_HI = 51
DR_RING_LCR_DEBOUNCE = 63  # loop closure debounce while ringing, 1.25 ms per LSB
DR_LINEFEED = 64  # bits 2..0 LF (written), bits 6..4 LFS (the state actually applied)
DR_BAT_FEED = 66  # battery feed control
DR_AUTO = 67  # automatic/manual control
DR_HOOK_STATUS = 68  # bit 0 LCR loop closure, bit 1 RTP ring trip (both debounced)
DR_LCR_DEBOUNCE = 69  # loop closure debounce interval, 1.25 ms per LSB
DR_RTP_DEBOUNCE = 70  # ring trip debounce interval, 1.25 ms per LSB
DR_LOOP_I_LIMIT = 71  # off-hook loop current limit: 20 mA + 3 mA per LSB
DR_ON_HOOK_V = 72  # on-hook (open circuit) line voltage, 1.5 V per LSB
DR_COMMON_V = 73  # common mode voltage, -1.5 V per LSB
DR_VBATH = 74  # high battery (ringing), -1.5 V per LSB
DR_VBATL = 75  # low battery (off hook), -1.5 V per LSB
DR_LVS = 78  # loop voltage sense: bits 5..0 at 1.5 V per LSB, bit 6 reverse (twin)
DR_LCS = 79  # loop current sense: bits 5..0 at 1.1 mA per LSB
DR_VTIP = 80  # tip voltage to ground, magnitude, 0.376 V per LSB
DR_VRING = 81  # ring voltage to ground, magnitude, 0.376 V per LSB
DR_VBATS1 = 82  # battery voltage sense 1, 0.376 V per LSB
DR_VBATS2 = 83  # battery voltage sense 2, 0.376 V per LSB
DR_DCDC_PERIOD = 92  # DC-DC converter PWM period
DR_DCDC_SWITCH = 93  # DC-DC converter min off time
DR_CAL1 = 96  # calibration control/status 1: bit 6 CAL runs until the chip clears it
DR_CAL2 = 97  # calibration control/status 2: which calibrations to run
DR_ENHANCE = 108  # enhancement enable (revision E and later)

# -- reset values the sanity check expects (as wctdm's proslic_insane reads them) --
RESET_LOOPBACK = 0x02
RESET_HYBRID = 0x33
RESET_LINEFEED = 0x00

# -- DR0 / DR1 fields --
REV_MASK = 0x0F
PART_SHIFT, PART_MASK = 4, 0x30
PCM_MODE_SI3215 = 0x80

# -- DR14 --
PDDCDC = 0x10

# -- DR18: interrupt status 1 --
IRQ1_OSC1A, IRQ1_OSC1I, IRQ1_OSC2A, IRQ1_OSC2I = 0x01, 0x02, 0x04, 0x08
IRQ1_RINGTA, IRQ1_RINGTI = 0x10, 0x20  # ring active timer / inactive timer expired
# -- DR19: interrupt status 2 --
IRQ2_RTRIP = 0x01  # ring trip
IRQ2_LOOP = 0x02  # loop closure transition
IRQ2_PQ_SHIFT = 2  # bits 2..7: power alarm on transistor Q1..Q6
IRQ2_PQ_MASK = 0xFC
# -- DR20: interrupt status 3 --
IRQ3_DTMF, IRQ3_INDIRECT, IRQ3_CMCAL = 0x01, 0x02, 0x04

# -- DR31 --
IAS_PENDING = 0x01

# -- DR34: ringing oscillator control --
RING_OSC_EN = 0x04  # oscillator enabled (the chip sets it while the linefeed rings)
RING_TI_EN = 0x08  # inactive timer enable (twin)
RING_TA_EN = 0x10  # active timer enable (twin)

# -- DR64 linefeed states (LF and LFS) --
LF_OPEN = 0
LF_FORWARD_ACTIVE = 1
LF_FORWARD_OHT = 2  # on-hook transmission: audio path up while on hook (caller ID)
LF_TIP_OPEN = 3
LF_RINGING = 4
LF_REVERSE_ACTIVE = 5
LF_REVERSE_OHT = 6
LF_RING_OPEN = 7
LF_MASK = 0x07
LFS_SHIFT = 4

# -- DR67: automatic/manual control (twin bit positions; reset value 0x1F) --
AUTO_RTRIP = 0x01  # ring trip switches the linefeed to active by itself
AUTO_LOOP = 0x02  # automatic loop-closure battery selection
AUTO_BAT = 0x08  # automatic battery switching
AUTO_OPEN = 0x10  # a power alarm opens the linefeed by itself

# -- DR68 --
HOOK_LCR = 0x01
HOOK_RTP = 0x02

# -- DR96 --
CAL_RUN = 0x40  # set by the host to start, cleared by the chip when calibration is done
CAL_ALL = 0x1F  # DR96/DR97 low bits: every calibration step

# -- scalings --
TIMER_TICK_S = 125e-6  # ring timers
DEBOUNCE_TICK_MS = 1.25  # DR63/69/70
ILIM_BASE_MA, ILIM_STEP_MA = 20.0, 3.0  # DR71
VOC_STEP_V = 1.5  # DR72..75
LVS_STEP_V = 1.5  # DR78
LVS_REVERSE = 0x40  # DR78 sign: tip more negative than ring (twin)
LCS_STEP_MA = 1.1  # DR79
VSENSE_STEP_V = 0.376  # DR80..83

# -- indirect registers --
IR_RING_OFFSET = 19  # ringing DC offset
IR_RING_FREQ = 20  # RNGY: ring oscillator frequency coefficient
IR_RING_AMP = 21  # RNGX: ring oscillator amplitude
IR_RING_INIT = 22  # ring oscillator initial phase
IR_LCR_THRESH = 28  # loop closure threshold
IR_RTP_THRESH = 29  # ring trip threshold
IR_PQ12_THRESH, IR_PQ34_THRESH, IR_PQ56_THRESH = 32, 33, 34  # power alarm thresholds
IR_LCR_FILTER = 35  # loop closure filter coefficient
IR_RTP_FILTER = 36  # ring trip filter coefficient
IR_COUNT = 105  # indirect registers 0..104

RING_OSC_RATE = 1000.0  # the ring oscillator's coefficients are defined at 1 kHz
RING_AMP_FULL_V = 96.0  # RNGX full scale, peak volts
