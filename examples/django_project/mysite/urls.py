from django.http import HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"message": "Hello from Django"})


def user(request: HttpRequest, user_id: int) -> JsonResponse:
    return JsonResponse({"id": user_id})


urlpatterns = [
    path("api/test", hello),
    path("users/<int:user_id>", user),
]
