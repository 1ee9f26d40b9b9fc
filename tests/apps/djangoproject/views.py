"""Views of the test Django project."""

from __future__ import annotations

import hashlib

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django\n", content_type="text/plain; charset=utf-8")


@require_POST
def echo_length(request: HttpRequest) -> JsonResponse:
    body = request.body
    return JsonResponse({
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        # a url-encoded form is parsed by Django itself (no extra package)
        "name": request.POST.get("name") if request.content_type == "application/x-www-form-urlencoded" else None,
    })


def info(request: HttpRequest, number: int) -> JsonResponse:
    response = JsonResponse({
        "number": number,
        "method": request.method,
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "query": request.GET.dict(),
        "secure": request.is_secure(),
        "host": request.get_host(),
        "user_agent": request.headers.get("User-Agent"),
    })
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("view crashed")
