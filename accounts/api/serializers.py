from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Organization, User
from accounts.permissions import user_can_audit, user_can_manage_members, user_can_read, user_can_write


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=254, help_text="Username or email address.")
    password = serializers.CharField(max_length=4096, style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True, help_text="Send as `Authorization: Token <token>`.")


class TokenStatusSerializer(serializers.Serializer):
    exists = serializers.BooleanField(read_only=True)
    created = serializers.DateTimeField(read_only=True, allow_null=True)


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug"]


class PermissionsSerializer(serializers.Serializer):
    read = serializers.BooleanField(help_text="May read the organization's cases, scans and predictions.")
    write = serializers.BooleanField(help_text="May create cases, upload scans and request predictions.")
    audit = serializers.BooleanField(help_text="May read the organization's audit trail.")
    manage_members = serializers.BooleanField()


class MeSerializer(serializers.ModelSerializer):
    organization = OrganizationSerializer(read_only=True, allow_null=True)
    permissions = serializers.SerializerMethodField()
    has_api_token = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "role",
            "organization",
            "permissions",
            "has_api_token",
        ]
        read_only_fields = fields

    @extend_schema_field(PermissionsSerializer)
    def get_permissions(self, user: User) -> dict:
        return {
            "read": user_can_read(user),
            "write": user_can_write(user),
            "audit": user_can_audit(user),
            "manage_members": user_can_manage_members(user),
        }

    def get_has_api_token(self, user: User) -> bool:
        from rest_framework.authtoken.models import Token

        return Token.objects.filter(user=user).exists()
