// Swagger UI on /docs: the spec from this server; the key the web app stored (if any) is sent as Bearer.
/* global SwaggerUIBundle */
SwaggerUIBundle({
  url: document.getElementById("ui").dataset.specUrl,
  dom_id: "#ui",
  validatorUrl: null, // the default badge would call validator.swagger.io
  requestInterceptor: (request) => {
    const key = localStorage.getItem("chatterbox.apiKey");
    if (key) request.headers.Authorization = `Bearer ${key}`;
    return request;
  },
});
