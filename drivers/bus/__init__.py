"""The three interfaces chip drivers see: an SPI device, GPIO lines, a PCM stream.

Each module holds the interface, the real implementation (spidev, RPi.GPIO, alsaaudio,
imported only when it is opened) and the simulated twin the emulators sit behind.
"""
