"""The echo executor both test agents (http_agent.py, grpc_agent.py) run, so that every
binding behaves the same. What it does, by the text of the message it receives:
- `stream`: a task that reports `working`, waits `pause` seconds, then completes, so a client
  can tell an incremental stream from a buffered one by when the events arrive;
- `wait`: a task that stays `working` until it is canceled;
- anything else: a completed task with an artifact `echo: <text>`.
"""

import asyncio

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import Part, Task, TaskState, TaskStatus


class Executor(AgentExecutor):
    def __init__(self, pause: float):
        self.pause = pause

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        await event_queue.enqueue_event(
            Task(
                id=context.task_id,
                context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                history=[context.message],
            )
        )
        task = TaskUpdater(event_queue, context.task_id, context.context_id)
        await task.start_work(task.new_agent_message([Part(text="working")]))
        if text == "wait":
            await asyncio.Event().wait()  # until canceled
        if text == "stream":
            await asyncio.sleep(self.pause)
        await task.add_artifact([Part(text=f"echo: {text}")])
        await task.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = TaskUpdater(event_queue, context.task_id, context.context_id)
        await task.cancel()

