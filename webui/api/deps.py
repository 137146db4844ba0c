"""What routes are handed: the App and the chat service, stored on the FastAPI app by `create_api`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from webui.app import App
from webui.chat_service import ChatService


def get_hearth(request: Request) -> App:
    return request.app.state.hearth


def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


Hearth = Annotated[App, Depends(get_hearth)]
Chat = Annotated[ChatService, Depends(get_chat)]
