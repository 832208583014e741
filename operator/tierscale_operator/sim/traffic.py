"""Request traces shaped like real MovieLens-100K activity.

The hour-of-week profile of rating timestamps (counts per hour of the week, circularly smoothed)
gives the shape. A trace scales it to a peak request rate and adds day-to-day variation, correlated
noise, optional flash crowds and Poisson arrivals per interval. The ratings of the first half of the
data set (by time) shape training traces and those of the second half shape test traces, so the
two differ in shape as well as in their random draws.

The shape is a proxy: ratings are not page views, and a user rates many films in one sitting, so
the raw hourly counts are bursty; the smoothing (default 1.5 h) removes most of that.
"""

from __future__ import annotations

import dataclasses

import numpy as np

HOURS_PER_WEEK = 168
# Unix time 0 was a Thursday; with Monday = 0, day d since the epoch is weekday (d + 3) % 7.
_EPOCH_WEEKDAY = 3


def hour_of_week_counts(timestamps: np.ndarray, utc_offset_h: float) -> np.ndarray:
    """Count events per hour of the week (Monday 00:00 local time is hour 0)."""
    local = np.asarray(timestamps, dtype=np.int64) + int(round(utc_offset_h * 3600))
    hours = local // 3600
    days = hours // 24
    hour_of_week = ((days + _EPOCH_WEEKDAY) % 7) * 24 + hours % 24
    return np.bincount(hour_of_week, minlength=HOURS_PER_WEEK).astype(np.float64)


def smooth_circular(values: np.ndarray, sigma: float) -> np.ndarray:
    """Convolve a periodic series with a Gaussian kernel of standard deviation `sigma` samples."""
    if sigma <= 0:
        return values.copy()
    n = values.shape[0]
    offsets = np.arange(n)
    distance = np.minimum(offsets, n - offsets)
    kernel = np.exp(-0.5 * (distance / sigma) ** 2)
    kernel /= kernel.sum()
    return np.real(np.fft.ifft(np.fft.fft(values) * np.fft.fft(kernel)))


@dataclasses.dataclass(frozen=True)
class WeeklyShape:
    """Relative request rate per hour of the week, with maximum 1."""

    hourly: np.ndarray  # (168,)
    source: str

    @classmethod
    def from_timestamps(cls, timestamps: np.ndarray, *, utc_offset_h: float, smoothing_h: float,
                        source: str) -> WeeklyShape:
        counts = smooth_circular(hour_of_week_counts(timestamps, utc_offset_h), smoothing_h)
        if counts.max() <= 0:
            raise ValueError(f"no events to shape traffic from ({source})")
        return cls(hourly=counts / counts.max(), source=source)

    def at(self, hour_of_week: np.ndarray) -> np.ndarray:
        """Linearly interpolate between hour centres, wrapping around the week."""
        position = np.asarray(hour_of_week, dtype=np.float64) - 0.5
        low = np.floor(position).astype(np.int64)
        fraction = position - low
        low %= HOURS_PER_WEEK
        high = (low + 1) % HOURS_PER_WEEK
        return self.hourly[low] * (1.0 - fraction) + self.hourly[high] * fraction


def train_test_shapes(timestamps: np.ndarray, *, utc_offset_h: float = -6.0,
                      smoothing_h: float = 1.5) -> tuple[WeeklyShape, WeeklyShape]:
    """Shapes from the first and the second half of the timestamps (split at the median time).

    The default offset, UTC-6, is US Central time (MovieLens is run from Minnesota); most raters
    were in the United States.
    """
    ordered = np.sort(np.asarray(timestamps, dtype=np.int64))
    middle = ordered.shape[0] // 2
    train = WeeklyShape.from_timestamps(ordered[:middle], utc_offset_h=utc_offset_h, smoothing_h=smoothing_h,
                                        source="MovieLens-100K ratings, first half by time")
    test = WeeklyShape.from_timestamps(ordered[middle:], utc_offset_h=utc_offset_h, smoothing_h=smoothing_h,
                                       source="MovieLens-100K ratings, second half by time")
    return train, test


@dataclasses.dataclass(frozen=True)
class TrafficConfig:
    """Settings that turn a weekly shape into a trace.

    `peak_rps` is the rate at the shape's maximum before noise and flash crowds. Day factors are
    lognormal with sigma `day_sigma`; interval noise is an AR(1) process on the log rate with
    stationary sigma `noise_sigma` and lag-one correlation `noise_correlation`. Flash crowds arrive
    as a Poisson process (`flash_crowds_per_day`), each multiplying the rate by a factor drawn from
    `flash_multiplier` for a duration drawn from `flash_duration_min` minutes, with linear ramps
    of `flash_ramp_min` minutes.
    """

    peak_rps: float = 450.0
    interval_s: float = 30.0
    days: float = 28.0
    start_hour_of_week: float = 0.0
    day_sigma: float = 0.10
    noise_sigma: float = 0.06
    noise_correlation: float = 0.9
    flash_crowds_per_day: float = 0.3
    flash_multiplier: tuple[float, float] = (1.4, 2.2)
    flash_duration_min: tuple[float, float] = (10.0, 60.0)
    flash_ramp_min: float = 2.0

    def __post_init__(self) -> None:
        for name in ("peak_rps", "interval_s", "days"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"traffic {name} must be a positive number, got {value!r}")
        if not 0 <= self.noise_correlation < 1:
            raise ValueError(f"traffic noise_correlation must be in [0, 1), got {self.noise_correlation!r}")
        for name in ("day_sigma", "noise_sigma", "flash_crowds_per_day", "flash_ramp_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"traffic {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("flash_multiplier", "flash_duration_min"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"traffic {name} must be (low, high) with 0 < low <= high, got {(low, high)!r}")


@dataclasses.dataclass(frozen=True)
class Trace:
    """A request trace: one entry per control interval."""

    interval_s: float
    rate_rps: np.ndarray  # expected rate, before Poisson sampling
    arrivals: np.ndarray  # requests that arrived in each interval
    hour_of_day: np.ndarray  # local time at the interval's start, in hours [0, 24)
    shape_source: str
    seed: int

    @property
    def n_intervals(self) -> int:
        return int(self.arrivals.shape[0])

    @property
    def days(self) -> float:
        return self.n_intervals * self.interval_s / 86400.0

    @property
    def arrival_rps(self) -> np.ndarray:
        return self.arrivals / self.interval_s


def make_trace(shape: WeeklyShape, config: TrafficConfig, seed: int) -> Trace:
    """Draw a trace from `shape`; the same shape, config and seed give the same trace."""
    rng = np.random.default_rng(seed)
    n = int(round(config.days * 86400.0 / config.interval_s))
    hours = config.start_hour_of_week + np.arange(n) * config.interval_s / 3600.0
    rate = config.peak_rps * shape.at(hours % HOURS_PER_WEEK)

    day = np.floor(hours / 24.0).astype(np.int64)
    day_factor = np.exp(rng.normal(0.0, config.day_sigma, size=day.max() + 1) - 0.5 * config.day_sigma**2)
    rate = rate * day_factor[day - day.min()]

    rate = rate * np.exp(_ar1(rng, n, config.noise_sigma, config.noise_correlation))
    rate = rate * _flash_crowds(rng, n, config)
    arrivals = rng.poisson(rate * config.interval_s)
    return Trace(
        interval_s=config.interval_s,
        rate_rps=rate,
        arrivals=arrivals.astype(np.int64),
        hour_of_day=hours % 24.0,
        shape_source=shape.source,
        seed=seed,
    )


def _ar1(rng: np.random.Generator, n: int, sigma: float, correlation: float) -> np.ndarray:
    """AR(1) series with stationary standard deviation `sigma` and mean -sigma^2/2 (unit mean in exp)."""
    innovations = rng.normal(0.0, sigma * np.sqrt(1.0 - correlation**2), size=n)
    innovations[0] = rng.normal(0.0, sigma)
    series = np.empty(n)
    previous = 0.0
    for t, innovation in enumerate(innovations.tolist()):
        previous = correlation * previous + innovation
        series[t] = previous
    return series - 0.5 * sigma**2


def _flash_crowds(rng: np.random.Generator, n: int, config: TrafficConfig) -> np.ndarray:
    factor = np.ones(n)
    days = n * config.interval_s / 86400.0
    count = rng.poisson(config.flash_crowds_per_day * days)
    t = np.arange(n) * config.interval_s / 60.0  # minutes
    for _ in range(count):
        start = rng.uniform(0.0, t[-1])
        duration = rng.uniform(*config.flash_duration_min)
        multiplier = rng.uniform(*config.flash_multiplier)
        ramp = max(config.flash_ramp_min, 1e-9)
        rise = np.clip((t - start) / ramp, 0.0, 1.0)
        fall = np.clip((start + duration - t) / ramp, 0.0, 1.0)
        factor *= 1.0 + (multiplier - 1.0) * np.minimum(rise, fall)
    return factor
