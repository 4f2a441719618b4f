"""Token issue/revoke and the current user."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.serializers import MeSerializer, TokenRequestSerializer, TokenSerializer, TokenStatusSerializer
from accounts.api.services import (
    TokenRateLimited,
    TokenRefused,
    api_token_get,
    api_token_revoke,
    api_token_rotate,
    api_token_sign_in,
)
from hemoplatform.api_support import TokenIssueThrottle, error_responses

LOGIN_LOCKOUT_S = 300  # allauth's login_failed window per login name: retry after it


def _revoke_own_token(request) -> Response:
    """DELETE /auth/token/ and DELETE /me/token/ are the same act, reachable from both places integrators look."""
    if not api_token_revoke(user=request.user, request=request):
        raise exceptions.NotFound("You have no API token.")
    return Response(status=status.HTTP_204_NO_CONTENT)


class TokenView(APIView):
    """``POST`` exchanges a username (or email) and password for the user's token; ``DELETE`` revokes the token
    of whoever is signed in (with that token or a session)."""

    def initialize_request(self, request, *args, **kwargs):
        # Credentials in the body are the authentication of POST: no session (and so no CSRF check) is involved.
        self._issuing = request.method == "POST"
        return super().initialize_request(request, *args, **kwargs)

    def get_authenticators(self):
        return [] if getattr(self, "_issuing", False) else super().get_authenticators()

    def get_permissions(self):
        return [AllowAny()] if getattr(self, "_issuing", False) else [IsAuthenticated()]

    def get_throttles(self):
        return [TokenIssueThrottle()] if getattr(self, "_issuing", False) else []

    @extend_schema(
        operation_id="auth_token_create",
        tags=["auth"],
        auth=[],
        request=TokenRequestSerializer,
        responses={200: TokenSerializer, **error_responses(400, 429)},
        summary="Get the API token for a username (or email) and password",
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token = api_token_sign_in(
                username=serializer.validated_data["username"],
                password=serializer.validated_data["password"],
                request=request._request,
            )
        except TokenRefused as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}, code="token_refused") from exc
        except TokenRateLimited as exc:
            raise exceptions.Throttled(wait=LOGIN_LOCKOUT_S, detail=str(exc)) from exc
        if token is None:
            raise exceptions.ValidationError(
                {"non_field_errors": ["Unable to sign in with these credentials."]}, code="authentication_failed"
            )
        return Response({"token": token.key})

    @extend_schema(
        operation_id="auth_token_destroy",
        tags=["auth"],
        request=None,
        responses={204: OpenApiResponse(description="Revoked."), **error_responses(401, 404)},
        summary="Revoke your API token",
    )
    def delete(self, request):
        return _revoke_own_token(request)


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="me_retrieve",
        tags=["me"],
        responses={200: MeSerializer, **error_responses(401)},
        summary="The signed-in user, their organization and what they may do",
    )
    def get(self, request):
        return Response(MeSerializer(request.user).data)


class MeTokenView(APIView):
    """The signed-in user's own token: see whether one exists, create or rotate it, revoke it."""

    permission_classes = [IsAuthenticated]

    def get_throttles(self):
        return [TokenIssueThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        operation_id="me_token_retrieve",
        tags=["me"],
        responses={200: TokenStatusSerializer, **error_responses(401)},
        summary="Whether you have an API token (the key itself is shown only when created)",
    )
    def get(self, request):
        token = api_token_get(user=request.user)
        return Response({"exists": token is not None, "created": token.created if token else None})

    @extend_schema(
        operation_id="me_token_create",
        tags=["me"],
        request=None,
        responses={201: TokenSerializer, **error_responses(400, 401, 429)},
        summary="Create your API token, or replace it by a new one",
    )
    def post(self, request):
        try:
            token = api_token_rotate(user=request.user, request=request)
        except TokenRefused as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}, code="token_refused") from exc
        return Response({"token": token.key}, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="me_token_destroy",
        tags=["me"],
        request=None,
        responses={204: OpenApiResponse(description="Revoked."), **error_responses(401, 404)},
        summary="Revoke your API token",
    )
    def delete(self, request):
        return _revoke_own_token(request)
