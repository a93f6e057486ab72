"""The diffusion maths of noise2music/diffusion.py against definitions and a known Gaussian target."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noise2music import diffusion as d


def test_cosine_schedule_endpoints_and_variance_preservation():
    s = d.Schedule("cosine")
    np.testing.assert_allclose(s.log_snr(0.0), 20.0, atol=1e-2)  # float32 near the ends
    np.testing.assert_allclose(s.log_snr(1.0), -20.0, atol=1e-2)
    t = jnp.linspace(0, 1, 101)
    a, sg = s.alpha_sigma(t)
    np.testing.assert_allclose(a ** 2 + sg ** 2, 1.0, atol=1e-6)
    assert np.all(np.diff(np.asarray(s.log_snr(t))) < 0)


def test_linear_schedule_is_ddpm_linear_beta_in_continuous_time():
    s = d.Schedule("linear")
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    for k in (100, 500, 1000):
        a, _ = s.alpha_sigma(k / 1000)
        np.testing.assert_allclose(np.log(float(a) ** 2), np.log(abar[k - 1]), rtol=0.02)
    with pytest.raises(ValueError, match="cosine"):
        d.Schedule("quadratic")


@pytest.mark.parametrize("param", ["eps", "v"])
def test_parameterizations_round_trip(param):
    s = d.Schedule("cosine")
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x, eps = jax.random.normal(k1, (4, 32)), jax.random.normal(k2, (4, 32))
    t = jnp.array([0.05, 0.3, 0.6, 0.9])
    x_t = d.q_sample(s, x, t, eps)
    eps_hat, x0_hat = d.to_eps_x0(s, d.target(s, x, t, eps, param), x_t, t, param)
    np.testing.assert_allclose(eps_hat, eps, atol=1e-4)
    np.testing.assert_allclose(x0_hat, x, atol=1e-3)
    assert float(jnp.max(d.diffusion_loss(s, d.target(s, x, t, eps, param), x, eps, t, param))) == 0.0
    pred = jnp.zeros_like(x)
    simple = d.diffusion_loss(s, pred, x, eps, t, param)
    np.testing.assert_allclose(d.diffusion_loss(s, pred, x, eps, t, param, "sigma"),
                               simple * s.alpha_sigma(t)[1] ** 2, rtol=1e-6)


def test_step_presets_are_the_papers_lists():
    for name, n in (("generator", 1000), ("cascader", 800), ("vocoder", 100)):
        sizes = d.step_sizes(name)
        assert len(sizes) == n and abs(sizes.sum() - 1) < 1e-9
        assert sizes[0] < sizes[-1]                       # front-heavy: small steps near t = 0
        times = d.step_times(name)
        assert times[0] == 1.0 and times[-1] == 0.0 and np.all(np.diff(times) < 0)
    back = d.step_sizes("back_heavy:generator")
    assert back[0] > back[-1]
    np.testing.assert_allclose(d.step_sizes("uniform:4"), 0.25)
    with pytest.raises(ValueError, match="sum to 1"):
        d.step_sizes([0.5, 0.4])


class _GaussianDenoiser:
    """The exact eps-predictor for data ~ N(mu, std^2), E[eps | x_t], behind the sampler's Denoiser
    protocol; without text (drop = 1) it predicts as if the mean were 0 (a guidance direction)."""

    parameterization = "eps"

    def __init__(self, schedule, mu, std):
        self.schedule, self.mu, self.std = schedule, mu, std

    def denoise(self, params, x_t, t, emb, mask, drop, cond=None, bottom=None):
        a, sg = self.schedule.alpha_sigma(t)
        a, sg = a[:, None, None], sg[:, None, None]
        mu = self.mu * (1.0 - drop.astype(x_t.dtype))[:, None, None]
        return sg * (x_t - a * mu) / (a * a * self.std * self.std + sg * sg)


@pytest.mark.parametrize("gamma,schedule", [(1.0, "cosine"), (0.0, "cosine"), (0.5, "linear")])
def test_sampler_recovers_a_known_gaussian(gamma, schedule):
    """The sampler the binary runs (noise2music.sampler), on the closed-form denoiser."""
    from noise2music import sampler

    s = d.Schedule(schedule)
    mu, std = 0.7, 0.3
    settings = sampler.Settings(steps="uniform:200", gamma=gamma, clip=None)
    step = sampler.make_step(_GaussianDenoiser(s, mu, std), guided=False, settings=settings)
    k0, k1 = jax.random.split(jax.random.PRNGKey(1))
    x1 = jax.random.normal(k0, (4096, 4, 1))
    x = sampler.sample(step, None, x1, settings, keys=jax.random.split(k1, 4096))
    assert abs(float(x.mean()) - mu) < 0.02 and abs(float(x.std()) - std) < 0.02


def test_sampler_guidance_doubles_the_batch_and_w_one_is_none():
    from noise2music import sampler

    s = d.Schedule("cosine")
    den = _GaussianDenoiser(s, 0.5, 0.3)
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    x1 = jax.random.normal(jax.random.PRNGKey(4), (64, 2, 1))
    run = lambda guided, w: sampler.sample(
        sampler.make_step(den, guided, sampler.Settings(steps="uniform:50", guidance=w, clip=None)), None,
        jnp.array(x1, copy=True),  # the step donates x
        sampler.Settings(steps="uniform:50", guidance=w, clip=None), keys=keys)
    plain, w1 = run(False, 1.0), run(True, 1.0)
    np.testing.assert_allclose(w1, plain, atol=1e-5)
    # w = 2: eps = 2 eps(mu) - eps(0), the mean moves past mu (extrapolated away from the unconditional).
    assert float(run(True, 2.0).mean()) > float(plain.mean()) + 0.1


def test_sampler_names_the_step_of_non_finite_values():
    from noise2music import sampler

    class Nan(_GaussianDenoiser):
        def denoise(self, *a, **k):
            return jnp.full_like(a[1], jnp.nan)

    settings = sampler.Settings(steps="uniform:20", clip=None)
    step = sampler.make_step(Nan(d.Schedule("cosine"), 0.0, 1.0), False, settings)
    with pytest.raises(sampler.SamplingError, match="stage x: non-finite values at step 2 of 20"):
        sampler.sample(step, None, jnp.zeros((2, 2, 1)), settings, keys=jax.random.split(jax.random.PRNGKey(0), 2),
                       name="stage x")


def test_guidance_scale_one_is_no_guidance_and_clipping_bounds():
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    c, u = jax.random.normal(k1, (3, 8)), jax.random.normal(k2, (3, 8))
    np.testing.assert_array_equal(d.guided(c, u, 1.0), c)
    np.testing.assert_allclose(d.guided(c, u, 0.0), u)
    big = 5.0 * jax.random.normal(k1, (3, 1000))
    clipped = d.dynamic_clip(big)
    assert float(jnp.max(jnp.abs(clipped))) <= 1.0 + 1e-6
    small = 0.5 * jnp.tanh(big)
    np.testing.assert_allclose(d.dynamic_clip(small), small)  # within [-1, 1]: untouched
