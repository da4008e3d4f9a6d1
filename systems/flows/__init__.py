"""Analytic teacher flows, one module per family. Importing this package registers every system.

=====================  ==============  =====================================================
family                 module          systems
=====================  ==============  =====================================================
linear (closed form)   ``linear``      ``linear_spiral``, ``harmonic_oscillator``
oscillators            ``oscillators`` ``van_der_pol``, ``duffing``, ``damped_pendulum``
ecology                ``ecology``     ``lotka_volterra``
chaos                  ``chaos``       ``lorenz63``
time dependent         ``time_dependent`` ``double_gyre``
=====================  ==============  =====================================================
"""

from systems.flows import chaos, ecology, linear, oscillators, time_dependent  # noqa: F401  (registration)
from systems.flows.chaos import Lorenz63
from systems.flows.ecology import LotkaVolterra
from systems.flows.linear import HarmonicOscillator, LinearSpiral
from systems.flows.oscillators import DampedPendulum, Duffing, VanDerPol
from systems.flows.time_dependent import DoubleGyre

__all__ = [
    "DampedPendulum",
    "DoubleGyre",
    "Duffing",
    "HarmonicOscillator",
    "LinearSpiral",
    "Lorenz63",
    "LotkaVolterra",
    "VanDerPol",
]
