"""The RQ worker: no fork per job, JSON jobs only, and only this project's own job function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rq import Queue, SimpleWorker
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer

from digits import keys
from digits.defaults import MAX_JOB_BYTES, WORKER_TTL
from digits.queueing import JOB_FUNCTION
from digits.recovery import Lease

if TYPE_CHECKING:  # the supervisor imports this module and must not load the model's libraries
    from worker.serving import Serving

ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})
PUBSUB_WAKE = 0.5  # seconds: the most a stopping worker waits for its command listener


class ForeignJobError(RuntimeError):
    """A job asked for something other than this project's job function: it is never run."""


class RefusedPayloadError(DeserializationError):
    """A job's payload is not ours (not JSON, or too big to be one of our jobs): it is never loaded."""


class SafeJob(Job):
    """An RQ job that refuses to import, call or contact anything outside the allowlist, and hands
    the function what the worker process serves.

    RQ would import and call a job's on_success, on_failure and on_stopped callbacks, named in the
    job, and send its webhooks (an HTTP request to any URL, with the traceback) even for a job it
    refused. Ours carry none: here they are never imported, called or sent, and a job that names
    any is refused.
    """

    serving: Serving | None = None  # set by DigitsWorker before it runs the job

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        """Never sent."""

    def hooks(self) -> list[str]:
        """The callbacks and webhooks this job asks for (RQ keeps the callbacks' names private)."""
        named = {"on_success": self._success_callback_name, "on_failure": self._failure_callback_name,
                 "on_stopped": self._stopped_callback_name}
        return [f"an {kind} callback {name!r}" for kind, name in named.items() if name] + \
            [f"a webhook to {webhook.url!r}" for webhook in self.webhooks]

    def _deserialize_data(self) -> None:
        if len(self.data) > MAX_JOB_BYTES:
            raise RefusedPayloadError(
                f"job {self.id} refused: its payload is {len(self.data)} bytes, over the limit of {MAX_JOB_BYTES}"
            )
        try:
            super()._deserialize_data()  # type: ignore[no-untyped-call]
        except DeserializationError:
            raise RefusedPayloadError(
                f"job {self.id} refused: its payload is not JSON (pickled or corrupt data is never loaded)"
            ) from None

    def _execute(self) -> Any:
        name = self.func_name
        instance = self.instance
        if name not in ALLOWED_FUNCTIONS or instance is not None:
            raise ForeignJobError(
                f"job {self.id} refused: function {name!r} is not one of this project's jobs "
                f"({', '.join(sorted(ALLOWED_FUNCTIONS))})"
            )
        if hooks := self.hooks():
            raise ForeignJobError(f"job {self.id} refused: it asks for {', '.join(hooks)}, which this "
                                  "project's jobs never do (none is imported, called or sent)")
        if self.serving is None:
            raise RuntimeError(f"job {self.id}: only a DigitsWorker can run it (nothing to serve it with)")
        assert self.func is not None
        return self.func(*self.args, serving=self.serving, **self.kwargs)


class DigitsWorker(SimpleWorker):
    """Runs every job in this process, so the model is loaded once and only swapped when it moves."""

    def __init__(self, *args: Any, lease: Lease | None = None, serving: Serving | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_class", SafeJob)
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        super().__init__(*args, **kwargs)
        self.lease = lease
        self.serving = serving

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Hold the job in this process's lease while it runs, so its loss is noticed in seconds."""
        if isinstance(job, SafeJob):
            job.serving = self.serving
        if self.lease is not None:
            self.lease.hold(job.id)
        try:
            super().execute_job(job, queue)
        finally:
            if self.lease is not None:
                self.lease.hold("")

    def subscribe(self) -> None:
        """RQ's, with the command listener waking every PUBSUB_WAKE seconds instead of 60. Stopping
        the worker waits for the listener (redis-py's PubSubWorkerThread.stop joins it), and once
        unsubscribed it sleeps a whole sleep_time: an idle worker sometimes took 60 s to stop."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=PUBSUB_WAKE, daemon=True, exception_handler=self._pubsub_exception_handler)  # type: ignore[assignment]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ sends a heartbeat's three commands one by one, before and after every job; sent in one
        pipeline they cost one round trip (a lone image's latency). What this worker tells `status`
        goes with them (`announce`)."""
        ttl = timeout or self.worker_ttl + 60  # what RQ's heartbeat gives the registration
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            self.announce(pipeline, ttl)
            return
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipe)
            self.announce(pipe, ttl)
            pipe.execute()

    def announce(self, pipe: Any, ttl: int) -> None:
        """The model version and shared folder this worker serves, for `status` and for producers
        sending by path, renewed with each heartbeat and expiring with its registration (RQ's TTL
        above): a worker killed outright leaves none behind, and a Redis that lost them (restarted
        without its AOF) has them back within a heartbeat."""
        if self.serving is None:
            return
        if self.serving.models.loaded is not None:
            pipe.set(keys.worker_model(self.name), self.serving.models.loaded.version, ex=ttl)
        if self.serving.files_root is not None:
            pipe.set(keys.worker_files(self.name), str(self.serving.files_root), ex=ttl)

    def register_death(self) -> None:
        self.connection.delete(keys.worker_model(self.name), keys.worker_stats(self.name),
                               keys.worker_lease(self.name), keys.worker_files(self.name))
        super().register_death()  # type: ignore[no-untyped-call]
